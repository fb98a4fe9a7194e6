//! The ladder's L1: a plain tokio TCP relay (accept, connect upstream, copy both ways). One
//! extra hop through user space with no HTTP work at all.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Relay every connection accepted on `listener` to `upstream` until the process ends.
pub async fn serve(listener: TcpListener, upstream: SocketAddr) {
    loop {
        let Ok((mut down, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut up) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
        });
    }
}
