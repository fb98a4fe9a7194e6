//! The server side: TLS accept, Kannel's ack first, then what the request does.

use super::*;

pub(super) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, acceptor: TlsAcceptor) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, from)) => {
                    conns.spawn(serve_conn(inner.clone(), acceptor.clone(), tcp, from));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    // Back off a little on resource exhaustion rather than spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

pub(super) async fn serve_conn(
    inner: Arc<Inner>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    from: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let mut io = match timeout(DEADLINE, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%from, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%from, "TLS handshake timed out");
            return;
        }
    };
    inner.accepted.fetch_add(1, Ordering::Relaxed);
    let mut buf = Vec::new();
    loop {
        let req = match timeout(IDLE, read_message(&mut io, &mut buf, false)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                debug!(%from, error = %e, "bad or broken request; closing");
                if !buf.is_empty() {
                    let reason = format!("unreadable request: {e}");
                    inner.log(WireDirection::Closed, reason.as_bytes());
                }
                break;
            }
            Err(_) => break,
        };
        inner.log(WireDirection::In, &req.raw);
        let close = req.wants_close();
        let outcome = inner.handle_request(&req);
        let status = match outcome.answer {
            Answer::Ok => "200 OK",
            Answer::BadRequest => "400 Bad Request",
            Answer::Close(reason) => {
                info!(%from, %reason, "closing without an HTTP response");
                inner.log(WireDirection::Closed, reason.as_bytes());
                inner.run_after(outcome.after);
                let _ = timeout(Duration::from_secs(1), io.shutdown()).await;
                return;
            }
        };
        // The ack first (`send_http_ack()` before `fetch_url()`), then the async answer.
        let ack = ack_bytes(status, close, &rfc1123(now_secs()));
        let written = timeout(DEADLINE, async {
            io.write_all(ack.as_bytes()).await?;
            io.flush().await
        })
        .await;
        let ok = matches!(written, Ok(Ok(())));
        if ok {
            inner.log(WireDirection::Out, ack.as_bytes());
        }
        inner.run_after(outcome.after);
        if !ok {
            break;
        }
        if close {
            let _ = timeout(Duration::from_secs(1), io.shutdown()).await;
            break;
        }
    }
}
