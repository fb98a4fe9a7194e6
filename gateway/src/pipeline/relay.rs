//! Relay: one request, admitted, through the stages that decide and carry it: policy (the
//! first time only), normalize, route, fan-out. The same for a synchronous sender's request
//! (answered in the HTTP response) and for kept work (an asynchronous sender's, possibly
//! resumed after a restart or tried again after its destination came back).

use std::future::Future;
use std::pin::Pin;

use super::fanout::{self, Spread};
use super::keep::Keep;
use super::state::Gateway;
use super::{normalize, policy, route};
use crate::error::Failure;
use crate::links::Origin;
use crate::ssp::Primitive;
use crate::ssp::answer::AnswerForm;

/// Policy (when `fresh`: a request tried again was checked when it came in), normalize,
/// route, fan-out. `keep`: the kept work it is, if any.
pub(crate) async fn stages(
    gw: &Gateway,
    origin: &Origin,
    tid: &str,
    mut primitive: Primitive,
    fresh: bool,
    keep: Option<&Keep<'_>>,
) -> Spread {
    let form = AnswerForm::of(&primitive);
    let refused = |f: Failure| Spread {
        answer: form.clone().answer(f.status()),
        waiting: None,
    };
    // Policy: anti-spoofing (901), the originating user's rate.
    if fresh && let Err(f) = policy::check(gw, origin, &primitive).await {
        return refused(f);
    }
    // Normalize: what real peers write that the profile does not say.
    normalize::request(gw, origin, &mut primitive);
    // Route: a destination for each route-by ID (531 for a peer's non-subscribers). A
    // request that cannot be placed now (DNS down) may wait, as may an unreachable one.
    let plan = match route::plan(gw, origin, &primitive).await {
        Ok(p) => p,
        Err(f) => {
            let waits = keep.and_then(|k| k.waits(None, &f));
            return Spread {
                answer: form.clone().answer(f.status()),
                waiting: waits.map(|q| (q, form.answer(fanout::accepted_status()))),
            };
        }
    };
    // Fan-out: split per destination, forward over the links, merge the answers.
    fanout::run(gw, plan, primitive, tid, origin.domain(), keep).await
}

/// Count, gauge and time the handling of one request around `answer`.
///
/// `answer` is pinned by the caller (`std::pin::pin!`) and borrowed: a future taken by value
/// would be held twice in this one's state (as the argument and as what is awaited), and
/// every request's future is moved whole (on the fast path, it was half of it).
pub(crate) async fn metered<A: Answer>(
    gw: &Gateway,
    origin: &Origin,
    primitive: &'static str,
    answer: Pin<&mut impl Future<Output = A>>,
) -> A {
    let started = std::time::Instant::now();
    count_request(gw, origin, primitive);
    let in_flight = InFlight::new(gw, origin);
    let answer = answer.await;
    drop(in_flight);
    count_answer(gw, origin, answer.code(), started.elapsed());
    answer
}

/// An answer as [`metered`] counts it: a typed primitive, or one the fast path wrote.
pub(crate) trait Answer {
    /// Its SSP status code.
    fn code(&self) -> u16;
}

impl Answer for Primitive {
    fn code(&self) -> u16 {
        self.answer_code()
    }
}

impl Answer for crate::links::Reply {
    fn code(&self) -> u16 {
        self.answer_code()
    }
}

/// Count a request taken in.
pub(crate) fn count_request(gw: &Gateway, origin: &Origin, primitive: &'static str) {
    gw.metrics()
        .count_request(origin.direction(), origin.protocol(), primitive);
}

/// Count an answer given, `took` after its request came in.
pub(crate) fn count_answer(gw: &Gateway, origin: &Origin, code: u16, took: std::time::Duration) {
    gw.metrics().count_answer(
        origin.direction(),
        origin.protocol(),
        code,
        took.as_secs_f64(),
    );
}

/// A request being relayed, on the in-flight gauge while it lives (a handler dropped
/// mid-request, its client gone, leaves it too).
pub(crate) struct InFlight(prometheus::IntGauge);

impl InFlight {
    /// On the gauge of `origin`'s direction.
    pub(crate) fn new(gw: &Gateway, origin: &Origin) -> InFlight {
        let g = gw.metrics().in_flight(origin.direction());
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
