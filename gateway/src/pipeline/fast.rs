//! The fast path: a request the gateway only relays (a message, a presence notification, a
//! delivery report, to one SSP destination) goes through the stages without a typed tree.
//!
//! The body is read by the splicing codec ([`Spliced`]); identify, admit, policy and route
//! run on what it found (the same functions as the typed path, on the same values), and the
//! request is written for its destination by splicing its own bytes with the IDs rewritten.
//! The far side's synchronous answer, in the same shape, comes back written for the sender
//! the same way ([`Reply::Written`], from the links); any other answer is read typed.
//! Everything else is the typed path's, which understands it: a body the codec refuses (the
//! typed path refuses it the same way, and counts it), one not in the codec's shape, an
//! asynchronous sender (whose requests are kept before they are acknowledged), a peer named
//! by ENUM URIs, a report Baraza wrote the wrong way round (normalize turns it), and a plan
//! that splits the request, fails part of it or hands it to a translator (the typed fan-out
//! takes over from the same plan, so nothing is decided twice).

use std::pin::pin;
use std::sync::Arc;

use http::StatusCode;

use super::relay::metered;
use super::route::Plan;
use super::state::Gateway;
use super::{admit, fanout, identify, normalize, policy, route};
use crate::config::ResponseMode;
use crate::error::{Failure, Kind};
use crate::links::{Dest, Origin, Outbound, Part, Reply};
use crate::resolve::Svc;
use crate::ssp::answer::AnswerForm;
use crate::ssp::splice::{Kind as Fast, Spliced};
use crate::ssp::{Mode, Transaction, WvIdRef};
use crate::web::{ConnInfo, HttpResponse, refuse, respond};

/// Handle the POST `body` (on the core listener when `from_core`, else the peer listener)
/// on the fast path, or `None` for the typed path (nothing of it done yet: no metric
/// counted, no state changed).
pub(crate) async fn request(
    gw: &Arc<Gateway>,
    from_core: bool,
    body: &[u8],
    conn: &ConnInfo,
) -> Option<HttpResponse> {
    if from_core && gw.links.answer_mode(&Origin::Core) != ResponseMode::Sync {
        return None;
    }
    let (mut s, read) = Spliced::scan_read(&gw.links.live.load().codec, body)
        .ok()
        .flatten()?;
    gw.metrics().count_fast_read(read.label());
    if s.mode != Mode::Request
        || !matches!(
            s.kind,
            Fast::SendMessageRequest | Fast::PresenceNotification | Fast::DeliveryStatusReport
        )
    {
        return None;
    }
    let origin = if from_core {
        identify::core_session(gw, &s.session_id).map(|()| Origin::Core)
    } else {
        identify::peer(gw, &s.session_id, s.requestor_service(), conn).map(Origin::Peer)
    };
    let origin = match origin {
        Ok(o) => o,
        Err(f) => return Some(refuse(&f)),
    };
    if gw.links.answer_mode(&origin) != ResponseMode::Sync || !plain(gw, &origin, &s) {
        return None;
    }
    conn.authenticated();
    if gw.drain().is_draining() {
        return Some(refuse(&Failure::draining()));
    }
    // Taken, not copied: the scan's copy is not read again (the request goes out under our
    // own transaction ID).
    let tid = std::mem::take(&mut s.transaction_id);
    let form = match s.kind {
        Fast::SendMessageRequest => AnswerForm::SendMessage(s.message_id().map(str::to_owned)),
        _ => AnswerForm::Status,
    };
    let svc = match s.kind {
        Fast::PresenceNotification => Svc::Pres,
        _ => Svc::Im,
    };
    let label = s.kind.label();
    let failed = |f: Failure| Reply::typed(form.clone().answer(f.status()));
    let answer = {
        let work = pin!(async {
            let _slot = match admit::slot(gw, &origin) {
                Ok(slot) => slot,
                Err(f) => return failed(f),
            };
            if let Err(f) =
                policy::check_ids(gw, &origin, s.originators(), s.requestor_user()).await
            {
                return failed(f);
            }
            match route::plan_by(gw, &origin, s.route_by(), label, svc).await {
                Ok(plan) => forward(gw, &origin, plan, &mut s, &tid, &form).await,
                Err(f) => failed(f),
            }
        });
        metered(gw, &origin, label, work).await
    };
    let body = match answer {
        // The far side's answer, spliced for the origin on the way back.
        Reply::Written { body, .. } => body,
        Reply::Typed(p) => gw
            .links
            .answer_body(&origin, vec![Transaction::response(tid, *p)]),
    };
    Some(respond(StatusCode::OK, Some(body)))
}

/// Whether normalize has nothing to do for this request from `origin`.
fn plain(gw: &Gateway, origin: &Origin, s: &Spliced<'_>) -> bool {
    let Origin::Peer(peer) = origin else {
        return true;
    };
    if normalize::by_enum_uri(gw, &peer.cfg.domain) {
        return false;
    }
    if s.kind != Fast::DeliveryStatusReport {
        return true;
    }
    // The rule normalize applies: a report whose sender is not ours but whose recipient is,
    // is turned round.
    let ours = |id: Option<&str>| {
        id.and_then(|i| WvIdRef::parse(i).ok())
            .and_then(|i| i.e164())
            .is_some_and(|n| gw.directory().is_subscriber(n))
    };
    let (sender, recipient) = s.sender_and_recipient();
    ours(sender) || !ours(recipient)
}

/// Forward along `plan`: spliced to its one SSP destination, else the typed fan-out.
async fn forward(
    gw: &Gateway,
    origin: &Origin,
    mut plan: Plan,
    s: &mut Spliced<'_>,
    tid: &str,
    form: &AnswerForm,
) -> Reply {
    let part = Part {
        origin_tid: tid,
        origin_peer: origin.domain(),
        index: 0,
        of: 1,
        issued: None,
    };
    let single = plan.groups.len() == 1
        && plan.failed.is_empty()
        && match &plan.groups[0].0 {
            Dest::Core => true,
            Dest::Imps(r) | Dest::LastResort(r) => !normalize::by_enum_uri(gw, &r.domain),
            _ => false,
        };
    if !single {
        // Boxed: the fast path's own future stays small (see `handle`).
        return Box::pin(typed(gw, origin, plan, s, tid, form)).await;
    }
    let Some((dest, _)) = plan.groups.pop() else {
        return Reply::typed(
            form.clone()
                .answer(Failure::local(Kind::NoRoute, "no destination").status()),
        );
    };
    // Boxed: the send's state (the token, the headers, the body, the HTTP exchange: 1.7 KB)
    // would otherwise sit inline in every enclosing future, each of which is moved whole
    // once when built (the handler's future was 3 KB, moved four times per request). One
    // allocation instead of kilobytes of copying.
    let answer = match &dest {
        Dest::Imps(r) | Dest::LastResort(r) => {
            Box::pin(gw.links.to_peer(r, Outbound::Spliced(s, origin), part)).await
        }
        _ => Box::pin(gw.links.to_core(Outbound::Spliced(s, origin), part)).await,
    };
    let m = gw.metrics();
    m.count_delivery("ssp", answer.is_ok());
    m.count_fast_path(s.kind.label());
    answer.unwrap_or_else(|f| Reply::typed(form.clone().answer(f.status())))
}

/// The typed fan-out, from the whole plan.
async fn typed(
    gw: &Gateway,
    origin: &Origin,
    plan: Plan,
    s: &Spliced<'_>,
    tid: &str,
    form: &AnswerForm,
) -> Reply {
    // Read before the fan-out: the snapshot's guard is not held across its awaits.
    let typed = s.typed(&gw.links.live.load().codec);
    Reply::typed(match typed {
        Some(p) => {
            fanout::run(gw, plan, p, tid, origin.domain(), None)
                .await
                .answer
        }
        None => form
            .clone()
            .answer(Failure::local(Kind::Malformed, "not readable typed").status()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request's future is built and moved whole (into the connection's task): the
    /// fast path's must not carry the typed path's state, nor a DNS resolution's or an
    /// association's (those are boxed where they are awaited). It was 36 KB with the typed
    /// fan-out inline, and 7.7 KB (release) while `metered` and the links held their
    /// arguments twice; 2.3 KB now. Debug builds lay futures out larger, hence the margin.
    #[test]
    fn the_fast_path_future_stays_small() {
        let gw = Arc::new(Gateway::new(crate::links::tests::links()));
        let conn = ConnInfo::new(([127, 0, 0, 1], 1).into(), None);
        let fut = request(&gw, false, b"", &conn);
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 4 * 1024, "the fast path's future is {size} bytes");
    }
}
