//! A stack of fixed capacity, held inline: the open elements of the fast path's readers
//! (`xml/plain.rs` and the scan of `splice.rs`).
//!
//! Both push, look at and pop an entry for every element of every request and answer. A
//! `SmallVec` asked on each of those whether it had moved to the heap; this stack never
//! does. A body nested deeper than the capacity is not lost: `push` says no, and the plain
//! reader declines the body (the full reader reads it) and the scan leaves it to the typed
//! path, which read it before the fast path existed.

/// The nesting both readers hold inline: real SSP bodies nest about 8 deep.
pub(crate) const DEPTH: usize = 16;

/// At most `N` entries of `T`, inline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stack<T, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy + Default, const N: usize> Stack<T, N> {
    /// An empty stack.
    pub(crate) fn new() -> Self {
        Stack {
            items: [T::default(); N],
            len: 0,
        }
    }

    /// Push `t`; `false` (and nothing pushed) when the stack is full.
    #[must_use]
    pub(crate) fn push(&mut self, t: T) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = t;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The top entry, removed.
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.len = self.len.checked_sub(1)?;
        self.items.get(self.len).copied()
    }

    /// The top entry.
    pub(crate) fn last(&self) -> Option<&T> {
        self.items.get(self.len.checked_sub(1)?)
    }

    /// The top entry, to change it.
    pub(crate) fn last_mut(&mut self) -> Option<&mut T> {
        self.items.get_mut(self.len.checked_sub(1)?)
    }

    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::Stack;

    #[test]
    fn a_full_stack_refuses_and_keeps_what_it_has() {
        let mut s: Stack<u8, 2> = Stack::new();
        assert!(s.is_empty() && s.last().is_none() && s.pop().is_none());
        assert!(s.push(1) && s.push(2));
        assert!(!s.push(3), "pushed past the capacity");
        assert_eq!((s.len(), s.last()), (2, Some(&2)));
        if let Some(top) = s.last_mut() {
            *top = 5;
        }
        assert_eq!((s.pop(), s.pop(), s.pop()), (Some(5), Some(1), None));
        assert!(s.is_empty() && s.push(7) && s.last() == Some(&7));
    }
}
