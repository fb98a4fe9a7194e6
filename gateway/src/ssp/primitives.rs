//! The typed SSP primitives of the table of `PROTOCOL.md` §5, the association primitives of
//! section 3, and the search primitives of section 5's MSISDN search.
//!
//! Anything else (other group primitives, vendor primitives) is carried as
//! [`Primitive::Other`]: the proxy never drops what it does not understand.

use super::common::{
    Attrs, ContentData, Entity, EntityKind, Ext, MessageInfo, MetaInfo, Party, PresenceValue,
    Status,
};
use super::xml::{Element, XmlWriter};

/// `SendMessageRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendMessageRequest {
    /// `deliveryReport` (`Yes`/`No`).
    pub delivery_report: Option<String>,
    /// Originator.
    pub meta: Option<MetaInfo>,
    /// Recipients, sender, date.
    pub info: Option<MessageInfo>,
    /// The content.
    pub content: Option<ContentData>,
    /// Unknown content.
    pub ext: Ext,
}

impl SendMessageRequest {
    /// A plain-text message from `sender` to `recipient` with ID `message_id`, no report
    /// asked: what a translator makes of a SIP MESSAGE or an XMPP `<message>`.
    pub fn text(message_id: String, recipient: String, sender: String, text: String) -> Self {
        SendMessageRequest {
            delivery_report: Some("No".into()),
            info: Some(MessageInfo {
                message_id: Some(message_id),
                content_type: Some("text/plain".into()),
                recipient: Some(Party::user(recipient)),
                sender: Some(Party::user(sender)),
                ..Default::default()
            }),
            content: Some(ContentData {
                content_type: Some("text/plain".into()),
                data: text,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// `SendMessageResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendMessageResponse {
    /// `messageID`.
    pub message_id: Option<String>,
    /// Result.
    pub status: Option<Status>,
    /// Unknown content.
    pub ext: Ext,
}

/// `DeliveryStatusReport`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryStatusReport {
    /// Originator (the recipient's side).
    pub meta: Option<MetaInfo>,
    /// `DeliveryResult/Status`.
    pub result: Option<Status>,
    /// Unknown attributes/children of `DeliveryResult`.
    pub result_ext: Ext,
    /// `DeliveryTime` text.
    pub delivery_time: Option<String>,
    /// The original message's info (its `Sender` is the route-by ID).
    pub info: Option<MessageInfo>,
    /// Unknown content.
    pub ext: Ext,
}

/// `SubscribeRequest`, `UnsubscribeRequest` and `GetPresenceRequest` share this shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceRequest {
    /// The watcher.
    pub meta: Option<MetaInfo>,
    /// The presentities (`UserID`/`VerUserID`/`User`).
    pub users: Vec<Entity>,
    /// `AttributeList`, passed through.
    pub attribute_list: Option<Element>,
    /// Unknown content.
    pub ext: Ext,
}

/// `PresenceNotification`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceNotification {
    /// Originator (the presentity's service).
    pub meta: Option<MetaInfo>,
    /// The watchers (`User` elements): the route-by IDs.
    pub watchers: Vec<Entity>,
    /// Presence values, one per presentity.
    pub values: Vec<PresenceValue>,
    /// Unknown content.
    pub ext: Ext,
}

/// `GetPresenceResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetPresenceResponse {
    /// Result; Baraza sends none (treated as success with no values).
    pub status: Option<Status>,
    /// Presence values.
    pub values: Vec<PresenceValue>,
    /// Unknown content.
    pub ext: Ext,
}

/// One `SearchPairList`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchPair {
    /// `SearchElement`, e.g. `USER_MOBILE_NUMBER`.
    pub element: String,
    /// `SearchString`.
    pub string: String,
    /// Unknown content.
    pub ext: Ext,
}

/// `SearchRequest` (`PROTOCOL.md` §5, the SSP form of the client protocol's `Search-Request`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchRequest {
    /// `searchLimit`.
    pub search_limit: Option<String>,
    /// `searchID` (follow-up pages).
    pub search_id: Option<String>,
    /// `searchIndex`.
    pub search_index: Option<String>,
    /// Originator.
    pub meta: Option<MetaInfo>,
    /// The criteria.
    pub pairs: Vec<SearchPair>,
    /// Unknown content.
    pub ext: Ext,
}

impl SearchRequest {
    /// The `SearchString` of the `USER_MOBILE_NUMBER` pair, if any.
    pub fn mobile_number(&self) -> Option<&str> {
        self.pairs
            .iter()
            .find(|p| p.element.eq_ignore_ascii_case("USER_MOBILE_NUMBER"))
            .map(|p| p.string.as_str())
    }
}

/// `SearchResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchResponse {
    /// `searchID`.
    pub search_id: Option<String>,
    /// `findings`.
    pub findings: Option<String>,
    /// `completionFlag`.
    pub completion_flag: Option<String>,
    /// `searchIndex`.
    pub search_index: Option<String>,
    /// Result.
    pub status: Option<Status>,
    /// `SearchResult/UserList/*` entities.
    pub results: Vec<Entity>,
    /// Unknown content.
    pub ext: Ext,
}

/// `InviteRequest`, `InviteResponse` and `CancelInviteRequest`: invitation primitives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invite {
    /// `inviteID`.
    pub invite_id: Option<String>,
    /// Originator.
    pub meta: Option<MetaInfo>,
    /// `Inviting` (or `Canceling`): the originating side.
    pub from: Option<Party>,
    /// `Invited` (or `Canceled`, `Responding`): the route-by side.
    pub to: Option<Party>,
    /// Result (`InviteResponse`).
    pub status: Option<Status>,
    /// Unknown attributes (`inviteType`, `validity`, `acceptance`…) and children.
    pub ext: Ext,
}

/// A group primitive (`JoinGroupRequest`, `LeaveGroupRequest`, …): routed by `groupID`'s domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPrimitive {
    /// The primitive's element name.
    pub name: String,
    /// `groupID`.
    pub group_id: Option<String>,
    /// Originator.
    pub meta: Option<MetaInfo>,
    /// Unknown content (the primitive-specific parts).
    pub ext: Ext,
}

/// The group primitives routed by their `groupID` (Baraza's list).
pub const GROUP_PRIMITIVES: &[&str] = &[
    "DeleteGroupRequest",
    "JoinGroupRequest",
    "JoinGroupResponse",
    "LeaveGroupRequest",
    "LeaveGroupIndication",
    "GetGroupMemberRequest",
    "GetGroupMemberResponse",
    "GetJoinedUsersRequest",
    "GetJoinedUsersResponse",
    "AddGroupMemberRequest",
    "RemoveGroupMemberRequest",
    "MemberAccessRequest",
    "GetGroupPropsRequest",
    "GetGroupPropsResponse",
    "SetGroupPropsRequest",
    "RejectListRequest",
    "RejectListResponse",
    "SubscribeGroupChangeRequest",
    "UnsubscribeGroupChangeRequest",
    "GetGroupSubStatusRequest",
    "GetGroupSubStatusResponse",
    "GroupChangeNotice",
];

/// A primitive inside a session `Transaction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Primitive {
    /// Instant message.
    SendMessageRequest(SendMessageRequest),
    /// Its answer.
    SendMessageResponse(SendMessageResponse),
    /// Delivery report back to the sender.
    DeliveryStatusReport(DeliveryStatusReport),
    /// Presence subscription.
    SubscribeRequest(PresenceRequest),
    /// End of a subscription.
    UnsubscribeRequest(PresenceRequest),
    /// Presence push to watchers.
    PresenceNotification(PresenceNotification),
    /// One-off presence fetch.
    GetPresenceRequest(PresenceRequest),
    /// Its answer.
    GetPresenceResponse(GetPresenceResponse),
    /// MSISDN search.
    SearchRequest(SearchRequest),
    /// Its answer.
    SearchResponse(SearchResponse),
    /// Invitation.
    InviteRequest(Invite),
    /// Answer to an invitation.
    InviteResponse(Invite),
    /// Invitation cancelled.
    CancelInviteRequest(Invite),
    /// A group primitive.
    Group(GroupPrimitive),
    /// A bare `Status` (the answer to notifications, reports and subscriptions).
    Status(Status),
    /// Anything else, untouched.
    Other(Element),
}

/// Takes `c` as the primitive's MetaInfo if it is the first one; gives it back otherwise.
fn meta_child(meta: &mut Option<MetaInfo>, c: Element) -> Option<Element> {
    if c.name == "MetaInfo" && meta.is_none() {
        *meta = Some(MetaInfo::from_element(c));
        None
    } else {
        Some(c)
    }
}

fn write_meta(w: &mut XmlWriter, m: &Option<MetaInfo>) {
    if let Some(m) = m {
        m.write(w);
    }
}

fn write_status(w: &mut XmlWriter, s: &Option<Status>) {
    if let Some(s) = s {
        s.write(w);
    }
}

impl Primitive {
    /// The element name.
    pub fn name(&self) -> &str {
        match self {
            Primitive::Group(g) => &g.name,
            Primitive::Other(e) => &e.name,
            known => known.static_name(),
        }
    }

    /// The name as a metric label: a known primitive's name, `other` for the rest. A peer
    /// chooses unknown names, and each label value would be a time series kept for ever.
    pub fn label(&self) -> &'static str {
        match self {
            Primitive::Group(g) => GROUP_PRIMITIVES
                .iter()
                .find(|n| **n == g.name)
                .copied()
                .unwrap_or("other"),
            p => p.static_name(),
        }
    }

    fn static_name(&self) -> &'static str {
        match self {
            Primitive::SendMessageRequest(_) => "SendMessageRequest",
            Primitive::SendMessageResponse(_) => "SendMessageResponse",
            Primitive::DeliveryStatusReport(_) => "DeliveryStatusReport",
            Primitive::SubscribeRequest(_) => "SubscribeRequest",
            Primitive::UnsubscribeRequest(_) => "UnsubscribeRequest",
            Primitive::PresenceNotification(_) => "PresenceNotification",
            Primitive::GetPresenceRequest(_) => "GetPresenceRequest",
            Primitive::GetPresenceResponse(_) => "GetPresenceResponse",
            Primitive::SearchRequest(_) => "SearchRequest",
            Primitive::SearchResponse(_) => "SearchResponse",
            Primitive::InviteRequest(_) => "InviteRequest",
            Primitive::InviteResponse(_) => "InviteResponse",
            Primitive::CancelInviteRequest(_) => "CancelInviteRequest",
            Primitive::Status(_) => "Status",
            Primitive::Group(_) | Primitive::Other(_) => "other",
        }
    }

    /// The originator's `MetaInfo`, if the primitive has one.
    pub fn meta(&self) -> Option<&MetaInfo> {
        match self {
            Primitive::SendMessageRequest(p) => p.meta.as_ref(),
            Primitive::DeliveryStatusReport(p) => p.meta.as_ref(),
            Primitive::SubscribeRequest(p)
            | Primitive::UnsubscribeRequest(p)
            | Primitive::GetPresenceRequest(p) => p.meta.as_ref(),
            Primitive::PresenceNotification(p) => p.meta.as_ref(),
            Primitive::SearchRequest(p) => p.meta.as_ref(),
            Primitive::InviteRequest(p)
            | Primitive::InviteResponse(p)
            | Primitive::CancelInviteRequest(p) => p.meta.as_ref(),
            Primitive::Group(p) => p.meta.as_ref(),
            _ => None,
        }
    }

    /// Parse a primitive element (consuming it: values move, nothing is copied).
    pub fn from_element(el: Element) -> Primitive {
        match el.name.as_ref() {
            "SendMessageRequest" => {
                let mut a = Attrs::new(el.attrs);
                let mut p = SendMessageRequest {
                    delivery_report: a.take(&["deliveryReport"]),
                    ..Default::default()
                };
                p.ext.attrs = a.rest();
                for c in el.children {
                    let Some(c) = meta_child(&mut p.meta, c) else {
                        continue;
                    };
                    match c.name.as_ref() {
                        "MessageInfo" if p.info.is_none() => {
                            p.info = Some(MessageInfo::from_element(c))
                        }
                        "ContentData" if p.content.is_none() => {
                            p.content = Some(ContentData::from_element(c))
                        }
                        _ => p.ext.children.push(c),
                    }
                }
                Primitive::SendMessageRequest(p)
            }
            "SendMessageResponse" => {
                let mut a = Attrs::new(el.attrs);
                let mut p = SendMessageResponse {
                    message_id: a.take(&["messageID"]),
                    ..Default::default()
                };
                p.ext.attrs = a.rest();
                for c in el.children {
                    if c.name == "Status" && p.status.is_none() {
                        p.status = Some(Status::from_element(c));
                    } else {
                        p.ext.children.push(c);
                    }
                }
                Primitive::SendMessageResponse(p)
            }
            "DeliveryStatusReport" => {
                let mut p = DeliveryStatusReport {
                    ext: Ext::attrs(el.attrs),
                    ..Default::default()
                };
                for c in el.children {
                    let Some(c) = meta_child(&mut p.meta, c) else {
                        continue;
                    };
                    match c.name.as_ref() {
                        "DeliveryResult" if p.result.is_none() => {
                            p.result_ext.attrs = c.attrs;
                            for rc in c.children {
                                if rc.name == "Status" && p.result.is_none() {
                                    p.result = Some(Status::from_element(rc));
                                } else {
                                    p.result_ext.children.push(rc);
                                }
                            }
                            // An empty DeliveryResult still counts as present.
                            if p.result.is_none() {
                                p.result = Some(Status::new(0));
                            }
                        }
                        "DeliveryTime" if p.delivery_time.is_none() => {
                            p.delivery_time = Some(c.text)
                        }
                        "MessageInfo" if p.info.is_none() => {
                            p.info = Some(MessageInfo::from_element(c))
                        }
                        _ => p.ext.children.push(c),
                    }
                }
                Primitive::DeliveryStatusReport(p)
            }
            "SubscribeRequest" => Primitive::SubscribeRequest(PresenceRequest::from_element(el)),
            "UnsubscribeRequest" => {
                Primitive::UnsubscribeRequest(PresenceRequest::from_element(el))
            }
            "GetPresenceRequest" => {
                Primitive::GetPresenceRequest(PresenceRequest::from_element(el))
            }
            "PresenceNotification" => {
                let mut p = PresenceNotification {
                    ext: Ext::attrs(el.attrs),
                    ..Default::default()
                };
                for c in el.children {
                    let Some(c) = meta_child(&mut p.meta, c) else {
                        continue;
                    };
                    if c.name == "PresenceValue" {
                        p.values.push(PresenceValue::from_element(c));
                    } else if EntityKind::from_tag(&c.name).is_some_and(|k| !k.is_group()) {
                        match Entity::from_element(c) {
                            Ok(e) => p.watchers.push(e),
                            Err(c) => p.ext.children.push(c),
                        }
                    } else {
                        p.ext.children.push(c);
                    }
                }
                Primitive::PresenceNotification(p)
            }
            "GetPresenceResponse" => {
                let mut p = GetPresenceResponse {
                    ext: Ext::attrs(el.attrs),
                    ..Default::default()
                };
                for c in el.children {
                    match c.name.as_ref() {
                        "Status" if p.status.is_none() => p.status = Some(Status::from_element(c)),
                        "PresenceValue" => p.values.push(PresenceValue::from_element(c)),
                        _ => p.ext.children.push(c),
                    }
                }
                Primitive::GetPresenceResponse(p)
            }
            "SearchRequest" => {
                let mut a = Attrs::new(el.attrs);
                let mut p = SearchRequest {
                    search_limit: a.take(&["searchLimit"]),
                    search_id: a.take(&["searchID"]),
                    search_index: a.take(&["searchIndex"]),
                    ..Default::default()
                };
                p.ext.attrs = a.rest();
                for c in el.children {
                    let Some(c) = meta_child(&mut p.meta, c) else {
                        continue;
                    };
                    if c.name == "SearchPairList" {
                        let mut pair = SearchPair {
                            ext: Ext::attrs(c.attrs),
                            ..Default::default()
                        };
                        for pc in c.children {
                            match pc.name.as_ref() {
                                "SearchElement" => pair.element = pc.text,
                                "SearchString" => pair.string = pc.text,
                                _ => pair.ext.children.push(pc),
                            }
                        }
                        p.pairs.push(pair);
                    } else {
                        p.ext.children.push(c);
                    }
                }
                Primitive::SearchRequest(p)
            }
            "SearchResponse" => {
                let mut a = Attrs::new(el.attrs);
                let mut p = SearchResponse {
                    search_id: a.take(&["searchID"]),
                    findings: a.take(&["findings"]),
                    completion_flag: a.take(&["completionFlag"]),
                    search_index: a.take(&["searchIndex"]),
                    ..Default::default()
                };
                p.ext.attrs = a.rest();
                for mut c in el.children {
                    // Only the plain shape SearchResult/UserList/<entities> is typed;
                    // anything richer passes through as unknown content.
                    let plain_results = c.name == "SearchResult"
                        && p.results.is_empty()
                        && c.attrs.is_empty()
                        && c.children.len() == 1
                        && c.children[0].name == "UserList"
                        && c.children[0].attrs.is_empty()
                        && !c.children[0].children.is_empty()
                        && c.children[0]
                            .children
                            .iter()
                            .all(|u| EntityKind::from_tag(&u.name).is_some());
                    if plain_results {
                        let list = c.children.remove(0);
                        p.results = list
                            .children
                            .into_iter()
                            .filter_map(|e| Entity::from_element(e).ok())
                            .collect();
                    } else if c.name == "Status" && p.status.is_none() {
                        p.status = Some(Status::from_element(c));
                    } else {
                        p.ext.children.push(c);
                    }
                }
                Primitive::SearchResponse(p)
            }
            "InviteRequest" => {
                Primitive::InviteRequest(Invite::from_element(el, "Inviting", "Invited"))
            }
            "InviteResponse" => {
                Primitive::InviteResponse(Invite::from_element(el, "Inviting", "Responding"))
            }
            "CancelInviteRequest" => {
                Primitive::CancelInviteRequest(Invite::from_element(el, "Canceling", "Canceled"))
            }
            "Status" => Primitive::Status(Status::from_element(el)),
            name if GROUP_PRIMITIVES.contains(&name) => {
                let name = name.to_owned();
                let mut a = Attrs::new(el.attrs);
                let mut p = GroupPrimitive {
                    name,
                    group_id: a.take(&["groupID"]),
                    ..Default::default()
                };
                p.ext.attrs = a.rest();
                for c in el.children {
                    if let Some(c) = meta_child(&mut p.meta, c) {
                        p.ext.children.push(c);
                    }
                }
                Primitive::Group(p)
            }
            _ => Primitive::Other(el),
        }
    }

    /// Write as XML (canonical child order: known children, then unknown ones).
    pub fn write(&self, w: &mut XmlWriter) {
        match self {
            Primitive::SendMessageRequest(p) => {
                w.start("SendMessageRequest");
                w.attr_opt("deliveryReport", &p.delivery_report);
                p.ext.write_attrs(w);
                write_meta(w, &p.meta);
                if let Some(i) = &p.info {
                    i.write(w);
                }
                if let Some(c) = &p.content {
                    c.write(w);
                }
                p.ext.write_children(w);
                w.end("SendMessageRequest");
            }
            Primitive::SendMessageResponse(p) => {
                w.start("SendMessageResponse");
                w.attr_opt("messageID", &p.message_id);
                p.ext.write_attrs(w);
                write_status(w, &p.status);
                p.ext.write_children(w);
                w.end("SendMessageResponse");
            }
            Primitive::DeliveryStatusReport(p) => {
                w.start("DeliveryStatusReport");
                p.ext.write_attrs(w);
                write_meta(w, &p.meta);
                if let Some(s) = &p.result {
                    w.start("DeliveryResult");
                    p.result_ext.write_attrs(w);
                    // A DeliveryResult that arrived empty is re-emitted empty.
                    if s.code != 0 || !s.ext.is_empty() || s.description.is_some() {
                        s.write(w);
                    }
                    p.result_ext.write_children(w);
                    w.end("DeliveryResult");
                }
                if let Some(t) = &p.delivery_time {
                    w.text_element("DeliveryTime", t);
                }
                if let Some(i) = &p.info {
                    i.write(w);
                }
                p.ext.write_children(w);
                w.end("DeliveryStatusReport");
            }
            Primitive::SubscribeRequest(p) => p.write(w, "SubscribeRequest"),
            Primitive::UnsubscribeRequest(p) => p.write(w, "UnsubscribeRequest"),
            Primitive::GetPresenceRequest(p) => p.write(w, "GetPresenceRequest"),
            Primitive::PresenceNotification(p) => {
                w.start("PresenceNotification");
                p.ext.write_attrs(w);
                write_meta(w, &p.meta);
                for e in &p.watchers {
                    e.write(w);
                }
                for v in &p.values {
                    v.write(w);
                }
                p.ext.write_children(w);
                w.end("PresenceNotification");
            }
            Primitive::GetPresenceResponse(p) => {
                w.start("GetPresenceResponse");
                p.ext.write_attrs(w);
                write_status(w, &p.status);
                for v in &p.values {
                    v.write(w);
                }
                p.ext.write_children(w);
                w.end("GetPresenceResponse");
            }
            Primitive::SearchRequest(p) => {
                w.start("SearchRequest");
                w.attr_opt("searchLimit", &p.search_limit);
                w.attr_opt("searchID", &p.search_id);
                w.attr_opt("searchIndex", &p.search_index);
                p.ext.write_attrs(w);
                write_meta(w, &p.meta);
                for pair in &p.pairs {
                    w.start("SearchPairList");
                    pair.ext.write_attrs(w);
                    w.text_element("SearchElement", &pair.element);
                    w.text_element("SearchString", &pair.string);
                    pair.ext.write_children(w);
                    w.end("SearchPairList");
                }
                p.ext.write_children(w);
                w.end("SearchRequest");
            }
            Primitive::SearchResponse(p) => {
                w.start("SearchResponse");
                w.attr_opt("searchID", &p.search_id);
                w.attr_opt("findings", &p.findings);
                w.attr_opt("completionFlag", &p.completion_flag);
                w.attr_opt("searchIndex", &p.search_index);
                p.ext.write_attrs(w);
                write_status(w, &p.status);
                if !p.results.is_empty() {
                    w.start("SearchResult");
                    w.start("UserList");
                    for e in &p.results {
                        e.write(w);
                    }
                    w.end("UserList");
                    w.end("SearchResult");
                }
                p.ext.write_children(w);
                w.end("SearchResponse");
            }
            Primitive::InviteRequest(p) => p.write(w, "InviteRequest", "Inviting", "Invited"),
            Primitive::InviteResponse(p) => p.write(w, "InviteResponse", "Inviting", "Responding"),
            Primitive::CancelInviteRequest(p) => {
                p.write(w, "CancelInviteRequest", "Canceling", "Canceled")
            }
            Primitive::Group(p) => {
                w.start(&p.name);
                w.attr_opt("groupID", &p.group_id);
                p.ext.write_attrs(w);
                write_meta(w, &p.meta);
                p.ext.write_children(w);
                w.end(&p.name);
            }
            Primitive::Status(s) => s.write(w),
            Primitive::Other(e) => w.element(e),
        }
    }
}

impl PresenceRequest {
    fn from_element(el: Element) -> PresenceRequest {
        let mut p = PresenceRequest {
            ext: Ext::attrs(el.attrs),
            ..Default::default()
        };
        for c in el.children {
            let Some(c) = meta_child(&mut p.meta, c) else {
                continue;
            };
            if c.name == "AttributeList" && p.attribute_list.is_none() {
                p.attribute_list = Some(c);
            } else if EntityKind::from_tag(&c.name).is_some_and(|k| !k.is_group()) {
                match Entity::from_element(c) {
                    Ok(e) => p.users.push(e),
                    Err(c) => p.ext.children.push(c),
                }
            } else {
                p.ext.children.push(c);
            }
        }
        p
    }

    fn write(&self, w: &mut XmlWriter, name: &str) {
        w.start(name);
        self.ext.write_attrs(w);
        write_meta(w, &self.meta);
        for e in &self.users {
            e.write(w);
        }
        if let Some(a) = &self.attribute_list {
            w.element(a);
        }
        self.ext.write_children(w);
        w.end(name);
    }
}

impl Invite {
    fn from_element(el: Element, from_tag: &str, to_tag: &str) -> Invite {
        let mut a = Attrs::new(el.attrs);
        let mut p = Invite {
            invite_id: a.take(&["inviteID"]),
            ..Default::default()
        };
        p.ext.attrs = a.rest();
        for c in el.children {
            let Some(c) = meta_child(&mut p.meta, c) else {
                continue;
            };
            if c.name == from_tag && p.from.is_none() {
                p.from = Some(Party::from_element(c));
            } else if c.name == to_tag && p.to.is_none() {
                p.to = Some(Party::from_element(c));
            } else if c.name == "Status" && p.status.is_none() {
                p.status = Some(Status::from_element(c));
            } else {
                p.ext.children.push(c);
            }
        }
        p
    }

    fn write(&self, w: &mut XmlWriter, name: &str, from_tag: &str, to_tag: &str) {
        w.start(name);
        w.attr_opt("inviteID", &self.invite_id);
        self.ext.write_attrs(w);
        write_status(w, &self.status);
        write_meta(w, &self.meta);
        if let Some(p) = &self.from {
            p.write(w, from_tag);
        }
        if let Some(p) = &self.to {
            p.write(w, to_tag);
        }
        self.ext.write_children(w);
        w.end(name);
    }
}

/// `SendSecretToken` (association step 1 and 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendSecretToken {
    /// `serviceID` of the sender, `wv:@domain`.
    pub service_id: Option<String>,
    /// `protocol` (`WV-SSP`).
    pub protocol: Option<String>,
    /// `protocolVersion` (Baraza writes `procotolVersion`).
    pub protocol_version: Option<String>,
    /// The token text.
    pub token: String,
    /// `SecretToken@encoding`: when present the token is base64.
    pub token_encoding: Option<String>,
    /// Unknown content.
    pub ext: Ext,
}

/// `LoginRequest` (association steps 3 and 4; the Response-mode one carries the answer digest).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginRequest {
    /// `serviceID`.
    pub service_id: Option<String>,
    /// `timeToLive`.
    pub time_to_live: Option<String>,
    /// `PasswordDigest` text.
    pub digest: String,
    /// `PasswordDigest@encoding`.
    pub digest_encoding: Option<String>,
    /// Unknown content.
    pub ext: Ext,
}

/// `LoginResponse` (association steps 5 and 6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginResponse {
    /// `sessionID`, `<id>@<domain>` of the sender.
    pub session_id: Option<String>,
    /// `timeToLive`.
    pub time_to_live: Option<String>,
    /// Result.
    pub status: Option<Status>,
    /// Unknown content.
    pub ext: Ext,
}

/// A primitive inside `SetupTransaction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupPrimitive {
    /// Token exchange.
    SendSecretToken(SendSecretToken),
    /// Digest exchange.
    LoginRequest(LoginRequest),
    /// Session IDs exchange.
    LoginResponse(LoginResponse),
    /// Anything else.
    Other(Element),
}

impl SetupPrimitive {
    /// Parse (consuming the element).
    pub fn from_element(el: Element) -> SetupPrimitive {
        match el.name.as_ref() {
            "SendSecretToken" => {
                let mut a = Attrs::new(el.attrs);
                let mut p = SendSecretToken {
                    service_id: a.take(&["serviceID"]),
                    protocol: a.take(&["protocol"]),
                    protocol_version: a.take(&["protocolVersion", "procotolVersion"]),
                    ..Default::default()
                };
                p.ext.attrs = a.rest();
                let mut have_token = false;
                for c in el.children {
                    if c.name == "SecretToken" && !have_token {
                        have_token = true;
                        let mut ta = Attrs::new(c.attrs);
                        p.token_encoding = ta.take(&["encoding"]);
                        p.token = c.text;
                        // Other attributes of SecretToken are rare; keep them on the primitive.
                        p.ext.attrs.extend(ta.rest());
                    } else {
                        p.ext.children.push(c);
                    }
                }
                SetupPrimitive::SendSecretToken(p)
            }
            "LoginRequest" => {
                let mut a = Attrs::new(el.attrs);
                let mut p = LoginRequest {
                    service_id: a.take(&["serviceID"]),
                    time_to_live: a.take(&["timeToLive"]),
                    ..Default::default()
                };
                p.ext.attrs = a.rest();
                let mut have_digest = false;
                for c in el.children {
                    if c.name == "PasswordDigest" && !have_digest {
                        have_digest = true;
                        p.digest_encoding = c.attr("encoding").map(str::to_owned);
                        // Baraza wraps base64 with CRLF and pads with newlines.
                        p.digest = super::common::strip_ascii_whitespace(c.text);
                    } else {
                        p.ext.children.push(c);
                    }
                }
                SetupPrimitive::LoginRequest(p)
            }
            "LoginResponse" => {
                let mut a = Attrs::new(el.attrs);
                let mut p = LoginResponse {
                    session_id: a.take(&["sessionID"]),
                    time_to_live: a.take(&["timeToLive"]),
                    ..Default::default()
                };
                p.ext.attrs = a.rest();
                for c in el.children {
                    if c.name == "Status" && p.status.is_none() {
                        p.status = Some(Status::from_element(c));
                    } else {
                        p.ext.children.push(c);
                    }
                }
                SetupPrimitive::LoginResponse(p)
            }
            _ => SetupPrimitive::Other(el),
        }
    }

    /// Write as XML.
    pub fn write(&self, w: &mut XmlWriter) {
        match self {
            SetupPrimitive::SendSecretToken(p) => {
                w.start("SendSecretToken");
                w.attr_opt("serviceID", &p.service_id);
                w.attr_opt("protocol", &p.protocol);
                w.attr_opt("protocolVersion", &p.protocol_version);
                p.ext.write_attrs(w);
                w.start("SecretToken");
                w.attr_opt("encoding", &p.token_encoding);
                w.text(&p.token);
                w.end("SecretToken");
                p.ext.write_children(w);
                w.end("SendSecretToken");
            }
            SetupPrimitive::LoginRequest(p) => {
                w.start("LoginRequest");
                w.attr_opt("serviceID", &p.service_id);
                w.attr_opt("timeToLive", &p.time_to_live);
                p.ext.write_attrs(w);
                w.start("PasswordDigest");
                w.attr_opt("encoding", &p.digest_encoding);
                w.text(&p.digest);
                w.end("PasswordDigest");
                p.ext.write_children(w);
                w.end("LoginRequest");
            }
            SetupPrimitive::LoginResponse(p) => {
                w.start("LoginResponse");
                w.attr_opt("sessionID", &p.session_id);
                w.attr_opt("timeToLive", &p.time_to_live);
                p.ext.write_attrs(w);
                write_status(w, &p.status);
                p.ext.write_children(w);
                w.end("LoginResponse");
            }
            SetupPrimitive::Other(e) => w.element(e),
        }
    }
}
