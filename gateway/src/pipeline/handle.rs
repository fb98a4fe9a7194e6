//! The whole request path, top to bottom, for every listener and both directions.
//!
//! ```text
//!  POST ─► ingress ─┬─► fast: a plain relay, the same stages on spliced bytes (`fast`)
//!                   └─► parse ─► identify ─┬─► association step ─► links::assoc
//!                                          ├─► answers ─► answer (correlate with what waits)
//!                                          └─► requests ─► admit ─► policy ─► route ─►
//!                                                fan-out ─► links (forward, merge)
//!  answer ◄─ in the HTTP response (sync senders) or a POST of its own (async senders)
//! ```
//!
//! Peers' requests (inbound) and the core's (outbound) take the same path; what differs is
//! who the [`Origin`] is: the policy stage checks a peer's originators, the route stage lets a
//! peer reach our core only, and the answer goes back over the origin's link. Every request
//! that is taken in gets exactly one answer before its deadline.

use std::pin::pin;
use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::admit;
use super::relay::{self, metered};
use super::state::Gateway;
use super::{answer, fanout, fast, identify, ingress, work};
use crate::config::ResponseMode;
use crate::error::{Failure, Kind, Side};
use crate::links::Origin;
use crate::links::assoc::SetupFrom;
use crate::ssp::answer::AnswerForm;
use crate::ssp::{Body, Mode, Primitive, SetupTransaction, Transaction};
use crate::web::{ConnInfo, HttpResponse, refuse, respond};

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The peer-facing TLS listener.
    Peer,
    /// The core-facing listener.
    Core,
}

impl Listener {
    /// Whose side its requests come from, and the name its refusals are logged under.
    fn side(self) -> (Side, &'static str) {
        match self {
            Listener::Peer => (Side::Peer, "peer-listener"),
            Listener::Core => (Side::Core, "core"),
        }
    }
}

/// One POST, from ingress to the HTTP response.
pub async fn handle(
    gw: &Arc<Gateway>,
    listener: Listener,
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> HttpResponse {
    // A handler at work (a sync sender waiting for its answer) counts for draining.
    let _work = gw.drain().track();
    let (side, who) = listener.side();

    // 1. Ingress: the core listener serves the core only; then method, media type, size, XML.
    if listener == Listener::Core
        && let Err(f) = identify::core_connection(gw, &conn)
    {
        return refuse(&f);
    }
    let body = match ingress::read(gw, req, side, who).await {
        Ok(b) => b,
        Err(f) => return refuse(&f),
    };
    // What the fast path can carry whole, it does (`fast`); the rest goes on typed.
    if let Some(answer) = fast::request(gw, listener == Listener::Core, &body, &conn).await {
        return answer;
    }
    // Boxed: every request's future is built and moved whole, so the fast path's should not
    // carry the typed path's state (tens of kilobytes with the fan-out).
    Box::pin(typed(gw, listener, &body, &conn)).await
}

/// The typed path, from the parse of `body` to the HTTP response.
async fn typed(
    gw: &Arc<Gateway>,
    listener: Listener,
    body: &[u8],
    conn: &Arc<ConnInfo>,
) -> HttpResponse {
    let (side, who) = listener.side();
    let msg = match ingress::parse(gw, body, side, who) {
        Ok(m) => m,
        Err(f) => return refuse(&f),
    };

    // 2. Association steps are the association's business, on either listener.
    let session = match msg.body {
        Body::Setup(t) => return setup(gw, listener, t, conn),
        Body::Session(s) => s,
    };

    // 3. Identify the sender: the core, or which peer.
    let origin = match listener {
        Listener::Core => identify::core_session(gw, &session.session_id).map(|()| Origin::Core),
        Listener::Peer => {
            let service = session
                .transactions
                .iter()
                .find_map(|t| t.primitive.meta()?.requestor_service());
            identify::peer(gw, &session.session_id, service, conn).map(Origin::Peer)
        }
    };
    let origin = match origin {
        Ok(o) => o,
        Err(f) => return refuse(&f),
    };
    conn.authenticated();
    if gw.drain().is_draining() && session.transactions.iter().any(|t| t.mode == Mode::Request) {
        // Nothing of it taken in: the sender fails over or sends it again.
        return refuse(&Failure::draining());
    }

    // 4. Answers to our own requests complete what waits for them; broken transactions and
    //    answers we did not ask for are answered at once. A source that keeps sending
    //    answers we did not ask for is not heard for a while.
    let source = conn.remote.ip().to_canonical();
    if session
        .transactions
        .iter()
        .any(|t| t.mode == Mode::Response)
        && !gw.forged.load().allows(source)
    {
        gw.metrics().refused.with_label_values(&["rate"]).inc();
        return refuse(&Failure::new(
            Kind::RateLimited,
            side,
            "too many answers with unknown transaction IDs from this address",
        ));
    }
    let mut immediate = ingress::rejected(&session.rejected, side);
    let mut requests = Vec::new();
    let mut answers_taken = 0;
    for t in session.transactions {
        match t.mode {
            Mode::Request => requests.push(t),
            Mode::Response => {
                let tid = t.transaction_id.clone();
                match answer::accept(gw, t, &origin) {
                    Ok(()) => answers_taken += 1,
                    Err(f) => {
                        gw.forged.load().fail(source);
                        immediate.push(Transaction::response(tid, Primitive::Status(f.status())))
                    }
                }
            }
        }
    }
    let nothing_taken = requests.is_empty() && answers_taken == 0;
    let http = if nothing_taken {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };

    // 5. Requests, each to its one answer (the stages are in `request`).
    match gw.links.answer_mode(&origin) {
        ResponseMode::Sync => {
            // The answers ride in the HTTP response.
            let futs = requests.into_iter().map(|t| {
                let origin = &origin;
                Box::pin(async move { request(gw, origin, t).await })
            });
            immediate.extend(fanout::join_all(futs.collect()).await);
            respond(http, Some(gw.links.answer_body(&origin, immediate)))
        }
        ResponseMode::Async => {
            // Admitted before anything is spawned, so overload or a flood costs no task per
            // request; each answer is POSTed back on its own.
            let mut admitted = Vec::new();
            let mut refused = Vec::new();
            let mut last_refusal = None;
            for t in requests {
                match admit::slot(gw, &origin) {
                    Ok(slot) => admitted.push((t, slot)),
                    Err(f) => {
                        let label = t.primitive.label();
                        let refusal =
                            pin!(async { AnswerForm::of(&t.primitive).answer(f.status()) });
                        let answer = metered(gw, &origin, label, refusal).await;
                        refused.push(Transaction::response(t.transaction_id, answer));
                        last_refusal = Some(f);
                    }
                }
            }
            let taken = admitted.len();
            // Kept before the sender hears 200 (`work`): accepted means durable.
            if taken > 0
                && let Err(f) = work::take_in(gw, &origin, admitted).await
            {
                // Not all of it could be kept: the sender sends it again, and what was kept
                // is recognised then.
                return refuse(&f);
            }
            if let Some(f) = last_refusal {
                if taken == 0 && answers_taken == 0 {
                    // Nothing of this POST taken in: HTTP 503, no SSP answers (the sender
                    // sends it all again later; no answer is given twice).
                    return refuse(&f);
                }
                // The rest was taken in: the refusals go back as answers, in one POST.
                let (g, o) = (gw.clone(), origin.clone());
                gw.drain().spawn(async move {
                    g.links.deliver_answers(&o, refused).await;
                });
            }
            if immediate.is_empty() {
                respond(StatusCode::OK, None)
            } else {
                respond(http, Some(gw.links.answer_body(&origin, immediate)))
            }
        }
    }
}

/// A request a translator took in (SIP), from admission to its answer: the same stages as
/// an SSP peer's, answered in the translator's own transaction (nothing is acknowledged
/// before the answer, so nothing needs keeping).
pub(crate) async fn translated(gw: &Arc<Gateway>, origin: &Origin, t: Transaction) -> Transaction {
    request(gw, origin, t).await
}

/// One request from a synchronous `origin`, from admission to its answer (in the HTTP
/// response: nothing is acknowledged before it, so nothing needs keeping).
async fn request(gw: &Arc<Gateway>, origin: &Origin, t: Transaction) -> Transaction {
    let Transaction {
        transaction_id: tid,
        primitive,
        ..
    } = t;
    let label = primitive.label();
    let answer = {
        let work = pin!(async {
            // Admit: an in-flight slot and the sender's rate.
            let _slot = match admit::slot(gw, origin) {
                Ok(s) => s,
                Err(f) => return AnswerForm::of(&primitive).answer(f.status()),
            };
            relay::stages(gw, origin, &tid, primitive, true, None)
                .await
                .answer
        });
        metered(gw, origin, label, work).await
    };
    Transaction::response(tid, answer)
}

/// A `SetupTransaction`: from a peer, or from a core that authenticates by association.
fn setup(
    gw: &Arc<Gateway>,
    listener: Listener,
    t: SetupTransaction,
    conn: &ConnInfo,
) -> HttpResponse {
    let remote = Some(conn.remote.ip().to_canonical());
    match listener {
        Listener::Peer => gw
            .links
            .on_setup(t, SetupFrom::Peer(conn.certs.as_deref()), remote),
        Listener::Core if identify::core_associates(gw) => {
            gw.links.on_setup(t, SetupFrom::Core, remote)
        }
        Listener::Core => refuse(&Failure::new(
            Kind::Malformed,
            Side::Core,
            "the core is authenticated by address or certificate; no association is needed",
        )),
    }
}
