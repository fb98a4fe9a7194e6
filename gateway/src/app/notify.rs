//! Telling the service manager what the process is doing (systemd's `sd_notify` protocol:
//! one datagram of `KEY=value` lines to the socket named by `NOTIFY_SOCKET`), so a unit
//! with `Type=notify` is "started" only once the listeners are bound, and "stopping" as
//! soon as draining begins. Without `NOTIFY_SOCKET` (not under systemd) nothing is sent.

/// Send `state` (e.g. `READY=1`) to the service manager, if there is one. Failures are
/// logged, never fatal: the gateway serves either way.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(error = %e, socket = ?path, state, "service manager not told");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    match bytes.strip_prefix(b"@") {
        // An abstract socket (Linux): '@' stands for the leading NUL.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), std::path::Path::new(path))?;
        }
    }
    Ok(())
}
