//! Structures shared by many SSP primitives (`PROTOCOL.md` §4): entities (`User`, `UserID`,
//! `VerUserID`, `GroupID`, `ScreenName`), `MetaInfo`, `Status`, `MessageInfo`, `ContentData`.
//!
//! Every typed structure keeps what it does not understand in an [`Ext`]: unknown attributes
//! and unknown child elements travel through the gateway untouched. Known attributes are read
//! under Baraza's alternative spellings too (`MessageURI`, `ContentName`, `validlity`) and
//! written under the canonical ones.

use super::xml::{Element, Name, XmlWriter};

/// Unknown attributes and children of a typed element, kept for pass-through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ext {
    /// Attributes the typed layer does not know, in document order.
    pub attrs: Vec<(Name, String)>,
    /// Child elements the typed layer does not know, in document order.
    pub children: Vec<Element>,
}

impl Ext {
    /// No unknown content.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty() && self.children.is_empty()
    }

    /// Unknown attributes only.
    pub fn attrs(attrs: Vec<(Name, String)>) -> Self {
        Ext {
            attrs,
            children: Vec::new(),
        }
    }

    /// Write the unknown attributes (call right after the known ones).
    pub(crate) fn write_attrs(&self, w: &mut XmlWriter) {
        w.attrs(&self.attrs);
    }

    /// Write the unknown children (call after the known ones).
    pub(crate) fn write_children(&self, w: &mut XmlWriter) {
        for c in &self.children {
            w.element(c);
        }
    }
}

/// Takes known attributes out of an element's attribute list by name (with aliases), moving
/// the values; what is left over is the unknown rest, in document order.
pub(crate) struct Attrs(Vec<(Name, String)>);

impl Attrs {
    pub(crate) fn new(attrs: Vec<(Name, String)>) -> Self {
        Attrs(attrs)
    }

    /// The first attribute whose name is one of `names` (the canonical name first).
    pub(crate) fn take(&mut self, names: &[&str]) -> Option<String> {
        let i = self
            .0
            .iter()
            .position(|(k, _)| names.contains(&k.as_ref()))?;
        Some(self.0.remove(i).1)
    }

    pub(crate) fn rest(self) -> Vec<(Name, String)> {
        self.0
    }
}

/// An element naming a user, group or screen name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// `<User userID=… friendlyName=…>`
    User,
    /// `<UserID userID=…/>`
    UserId,
    /// `<VerUserID userID=…/>`
    VerUserId,
    /// `<GroupID groupID=…/>`
    GroupId,
    /// `<ScreenName groupID=…>nick</ScreenName>`
    ScreenName,
}

impl EntityKind {
    /// The element name.
    pub fn tag(self) -> &'static str {
        match self {
            EntityKind::User => "User",
            EntityKind::UserId => "UserID",
            EntityKind::VerUserId => "VerUserID",
            EntityKind::GroupId => "GroupID",
            EntityKind::ScreenName => "ScreenName",
        }
    }

    /// The kind for an element name, if it is one.
    pub fn from_tag(tag: &str) -> Option<Self> {
        Some(match tag {
            "User" => EntityKind::User,
            "UserID" => EntityKind::UserId,
            "VerUserID" => EntityKind::VerUserId,
            "GroupID" => EntityKind::GroupId,
            "ScreenName" => EntityKind::ScreenName,
            _ => return None,
        })
    }

    fn id_attr(self) -> &'static str {
        match self {
            EntityKind::GroupId | EntityKind::ScreenName => "groupID",
            _ => "userID",
        }
    }

    /// Whether the ID is a group ID rather than a user ID.
    pub fn is_group(self) -> bool {
        matches!(self, EntityKind::GroupId | EntityKind::ScreenName)
    }
}

/// A user, group or screen-name reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// Which element this was.
    pub kind: EntityKind,
    /// `userID` or `groupID`.
    pub id: String,
    /// `friendlyName` (User only, in practice).
    pub friendly_name: Option<String>,
    /// Element text (the nickname of a `ScreenName`).
    pub text: String,
    /// Unknown attributes and children (e.g. `ClientID`).
    pub ext: Ext,
}

impl Entity {
    /// A `<User userID=…/>`.
    pub fn user(id: impl Into<String>) -> Self {
        Entity::new(EntityKind::User, id)
    }

    /// An entity of `kind`.
    pub fn new(kind: EntityKind, id: impl Into<String>) -> Self {
        Entity {
            kind,
            id: id.into(),
            friendly_name: None,
            text: String::new(),
            ext: Ext::default(),
        }
    }

    /// Parse if `el` is an entity element; otherwise give the element back.
    pub fn from_element(el: Element) -> Result<Entity, Element> {
        let Some(kind) = EntityKind::from_tag(&el.name) else {
            return Err(el);
        };
        let mut a = Attrs::new(el.attrs);
        let id = a.take(&[kind.id_attr()]).unwrap_or_default();
        let friendly_name = a.take(&["friendlyName"]);
        Ok(Entity {
            kind,
            id,
            friendly_name,
            text: el.text,
            ext: Ext {
                attrs: a.rest(),
                children: el.children,
            },
        })
    }

    /// Write as XML.
    pub fn write(&self, w: &mut XmlWriter) {
        let tag = self.kind.tag();
        w.start(tag);
        w.attr(self.kind.id_attr(), &self.id);
        w.attr_opt("friendlyName", &self.friendly_name);
        self.ext.write_attrs(w);
        w.text(&self.text);
        self.ext.write_children(w);
        w.end(tag);
    }
}

/// Entities held by a wrapper element such as `Recipient`, `Sender`, `Inviting`, `Invited`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Party {
    /// The entities, in order.
    pub entities: Vec<Entity>,
    /// Unknown attributes and non-entity children (e.g. `SenderDisplay`).
    pub ext: Ext,
}

impl Party {
    /// A party of one user.
    pub fn user(id: impl Into<String>) -> Self {
        Party {
            entities: vec![Entity::user(id)],
            ext: Ext::default(),
        }
    }

    pub(crate) fn from_element(el: Element) -> Party {
        let mut p = Party {
            entities: Vec::with_capacity(el.children.len()),
            ext: Ext::attrs(el.attrs),
        };
        for c in el.children {
            match Entity::from_element(c) {
                Ok(e) => p.entities.push(e),
                Err(c) => p.ext.children.push(c),
            }
        }
        p
    }

    pub(crate) fn write(&self, w: &mut XmlWriter, name: &str) {
        w.start(name);
        self.ext.write_attrs(w);
        for e in &self.entities {
            e.write(w);
        }
        self.ext.write_children(w);
        w.end(name);
    }
}

/// `<MetaInfo clientOriginated=…><Requestor serviceID=…><User/></Requestor></MetaInfo>`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaInfo {
    /// `clientOriginated` (`Yes`/`No`).
    pub client_originated: Option<String>,
    /// The requestor.
    pub requestor: Option<Requestor>,
    /// Unknown content.
    pub ext: Ext,
}

/// `<Requestor serviceID=…>` with an optional user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requestor {
    /// `serviceID`, the sending service `wv:@domain`.
    pub service_id: Option<String>,
    /// The originating user, when client-originated.
    pub user: Option<Entity>,
    /// Unknown content.
    pub ext: Ext,
}

impl MetaInfo {
    /// A client-originated MetaInfo for `user` at `service_id`.
    pub fn client(service_id: &str, user: &str) -> Self {
        MetaInfo {
            client_originated: Some("Yes".into()),
            requestor: Some(Requestor {
                service_id: Some(service_id.to_owned()),
                user: Some(Entity::user(user)),
                ext: Ext::default(),
            }),
            ext: Ext::default(),
        }
    }

    pub(crate) fn from_element(el: Element) -> MetaInfo {
        let mut a = Attrs::new(el.attrs);
        let client_originated = a.take(&["clientOriginated"]);
        let mut m = MetaInfo {
            client_originated,
            requestor: None,
            ext: Ext::attrs(a.rest()),
        };
        for c in el.children {
            if c.name == "Requestor" && m.requestor.is_none() {
                let mut ra = Attrs::new(c.attrs);
                let service_id = ra.take(&["serviceID"]);
                let mut r = Requestor {
                    service_id,
                    user: None,
                    ext: Ext::attrs(ra.rest()),
                };
                for rc in c.children {
                    if r.user.is_some() {
                        r.ext.children.push(rc);
                        continue;
                    }
                    match Entity::from_element(rc) {
                        Ok(e) => r.user = Some(e),
                        Err(rc) => r.ext.children.push(rc),
                    }
                }
                m.requestor = Some(r);
            } else {
                m.ext.children.push(c);
            }
        }
        m
    }

    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.start("MetaInfo");
        w.attr_opt("clientOriginated", &self.client_originated);
        self.ext.write_attrs(w);
        if let Some(r) = &self.requestor {
            w.start("Requestor");
            w.attr_opt("serviceID", &r.service_id);
            r.ext.write_attrs(w);
            if let Some(u) = &r.user {
                u.write(w);
            }
            r.ext.write_children(w);
            w.end("Requestor");
        }
        self.ext.write_children(w);
        w.end("MetaInfo");
    }

    /// The requesting user's ID.
    pub fn requestor_user(&self) -> Option<&str> {
        self.requestor
            .as_ref()
            .and_then(|r| r.user.as_ref())
            .map(|u| u.id.as_str())
    }

    /// The requesting service ID.
    pub fn requestor_service(&self) -> Option<&str> {
        self.requestor
            .as_ref()
            .and_then(|r| r.service_id.as_deref())
    }
}

/// `<Status code=…>` with description, detailed results and `TryAgainTimeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The result code.
    pub code: u16,
    /// `StatusDescription` text.
    pub description: Option<String>,
    /// One per failed ID (or group of IDs).
    pub details: Vec<DetailedResult>,
    /// `TryAgainTimeout` in seconds.
    pub try_again: Option<u32>,
    /// Unknown content.
    pub ext: Ext,
}

/// `<DetailedResult code=…>` naming the IDs a code applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailedResult {
    /// The code.
    pub code: u16,
    /// `StatusDescription` text.
    pub description: Option<String>,
    /// `UserID`, `GroupID`, `ScreenName` children.
    pub ids: Vec<Entity>,
    /// `Domain` children.
    pub domains: Vec<String>,
    /// Unknown content.
    pub ext: Ext,
}

fn parse_code(a: &mut Attrs) -> u16 {
    a.take(&["code"])
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0)
}

impl Status {
    /// A bare status.
    pub fn new(code: u16) -> Self {
        Status {
            code,
            description: None,
            details: Vec::new(),
            try_again: None,
            ext: Ext::default(),
        }
    }

    /// A status with a description.
    pub fn with(code: u16, description: impl Into<String>) -> Self {
        Status {
            description: Some(description.into()),
            ..Status::new(code)
        }
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub(crate) fn from_element(el: Element) -> Status {
        let mut a = Attrs::new(el.attrs);
        let code = parse_code(&mut a);
        let mut s = Status {
            code,
            description: None,
            details: Vec::new(),
            try_again: None,
            ext: Ext::attrs(a.rest()),
        };
        for c in el.children {
            match c.name.as_ref() {
                "StatusDescription" if s.description.is_none() => s.description = Some(c.text),
                "DetailedResult" => s.details.push(DetailedResult::from_element(c)),
                "TryAgainTimeout" if s.try_again.is_none() && c.text.parse::<u32>().is_ok() => {
                    s.try_again = c.text.parse().ok()
                }
                _ => s.ext.children.push(c),
            }
        }
        s
    }

    /// Write as XML.
    pub fn write(&self, w: &mut XmlWriter) {
        w.start("Status");
        w.attr("code", &self.code.to_string());
        self.ext.write_attrs(w);
        if let Some(d) = &self.description {
            w.text_element("StatusDescription", d);
        }
        for d in &self.details {
            d.write(w);
        }
        if let Some(t) = self.try_again {
            w.text_element("TryAgainTimeout", &t.to_string());
        }
        self.ext.write_children(w);
        w.end("Status");
    }
}

impl DetailedResult {
    /// A detailed result for one user ID.
    pub fn for_user(code: u16, description: &str, user_id: &str) -> Self {
        DetailedResult {
            code,
            description: Some(description.to_owned()),
            ids: vec![Entity::new(EntityKind::UserId, user_id)],
            domains: Vec::new(),
            ext: Ext::default(),
        }
    }

    fn from_element(el: Element) -> DetailedResult {
        let mut a = Attrs::new(el.attrs);
        let code = parse_code(&mut a);
        let mut d = DetailedResult {
            code,
            description: None,
            ids: Vec::new(),
            domains: Vec::new(),
            ext: Ext::attrs(a.rest()),
        };
        for c in el.children {
            if c.name == "StatusDescription" && d.description.is_none() {
                d.description = Some(c.text);
            } else if c.name == "Domain" {
                d.domains.push(c.text);
            } else {
                match Entity::from_element(c) {
                    Ok(e) => d.ids.push(e),
                    Err(c) => d.ext.children.push(c),
                }
            }
        }
        d
    }

    fn write(&self, w: &mut XmlWriter) {
        w.start("DetailedResult");
        w.attr("code", &self.code.to_string());
        self.ext.write_attrs(w);
        if let Some(d) = &self.description {
            w.text_element("StatusDescription", d);
        }
        for e in &self.ids {
            e.write(w);
        }
        for d in &self.domains {
            w.text_element("Domain", d);
        }
        self.ext.write_children(w);
        w.end("DetailedResult");
    }
}

/// `<DateTime format="iso8601">…</DateTime>`: passed through as written (`PROTOCOL.md` §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTime {
    /// `format` attribute.
    pub format: Option<String>,
    /// The text, unvalidated.
    pub value: String,
    /// Unknown content.
    pub ext: Ext,
}

/// `<MessageInfo …>` with recipients, sender and date.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageInfo {
    /// `messageID`.
    pub message_id: Option<String>,
    /// `messageURI` (Baraza reads `MessageURI`).
    pub message_uri: Option<String>,
    /// `contentType`.
    pub content_type: Option<String>,
    /// `contentName` (Baraza reads `ContentName`).
    pub content_name: Option<String>,
    /// `contentSize`.
    pub content_size: Option<String>,
    /// `validity` (Baraza reads `validlity`).
    pub validity: Option<String>,
    /// `Recipient`.
    pub recipient: Option<Party>,
    /// `Sender`.
    pub sender: Option<Party>,
    /// `DateTime`.
    pub date_time: Option<DateTime>,
    /// Unknown content.
    pub ext: Ext,
}

impl MessageInfo {
    pub(crate) fn from_element(el: Element) -> MessageInfo {
        let mut a = Attrs::new(el.attrs);
        let mut m = MessageInfo {
            message_id: a.take(&["messageID"]),
            message_uri: a.take(&["messageURI", "MessageURI"]),
            content_type: a.take(&["contentType"]),
            content_name: a.take(&["contentName", "ContentName"]),
            content_size: a.take(&["contentSize"]),
            validity: a.take(&["validity", "validlity"]),
            ..MessageInfo::default()
        };
        m.ext.attrs = a.rest();
        for c in el.children {
            match c.name.as_ref() {
                "Recipient" if m.recipient.is_none() => m.recipient = Some(Party::from_element(c)),
                "Sender" if m.sender.is_none() => m.sender = Some(Party::from_element(c)),
                "DateTime" if m.date_time.is_none() => {
                    let mut da = Attrs::new(c.attrs);
                    let format = da.take(&["format"]);
                    m.date_time = Some(DateTime {
                        format,
                        value: c.text,
                        ext: Ext {
                            attrs: da.rest(),
                            children: c.children,
                        },
                    });
                }
                _ => m.ext.children.push(c),
            }
        }
        m
    }

    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.start("MessageInfo");
        w.attr_opt("messageID", &self.message_id);
        w.attr_opt("messageURI", &self.message_uri);
        w.attr_opt("contentType", &self.content_type);
        w.attr_opt("contentName", &self.content_name);
        w.attr_opt("contentSize", &self.content_size);
        w.attr_opt("validity", &self.validity);
        self.ext.write_attrs(w);
        if let Some(p) = &self.recipient {
            p.write(w, "Recipient");
        }
        if let Some(p) = &self.sender {
            p.write(w, "Sender");
        }
        if let Some(d) = &self.date_time {
            w.start("DateTime");
            w.attr_opt("format", &d.format);
            d.ext.write_attrs(w);
            w.text(&d.value);
            d.ext.write_children(w);
            w.end("DateTime");
        }
        self.ext.write_children(w);
        w.end("MessageInfo");
    }

    /// The sender's user ID (first entity of `Sender`).
    pub fn sender_id(&self) -> Option<&str> {
        self.sender
            .as_ref()
            .and_then(|p| p.entities.first())
            .map(|e| e.id.as_str())
    }
}

/// `<ContentData contentType=… encoding=…>…</ContentData>`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentData {
    /// `contentType`.
    pub content_type: Option<String>,
    /// `encoding` (`base64` or absent).
    pub encoding: Option<String>,
    /// The content; for base64 with all whitespace removed (Baraza wraps lines with `\r\n`).
    pub data: String,
    /// Unknown content.
    pub ext: Ext,
}

impl ContentData {
    pub(crate) fn from_element(el: Element) -> ContentData {
        let mut a = Attrs::new(el.attrs);
        let content_type = a.take(&["contentType"]);
        let encoding = a.take(&["encoding"]);
        let mut data = el.text;
        if encoding
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("base64"))
        {
            data = strip_ascii_whitespace(data);
        }
        ContentData {
            content_type,
            encoding,
            data,
            ext: Ext {
                attrs: a.rest(),
                children: el.children,
            },
        }
    }

    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.start("ContentData");
        w.attr_opt("contentType", &self.content_type);
        w.attr_opt("encoding", &self.encoding);
        self.ext.write_attrs(w);
        w.text(&self.data);
        self.ext.write_children(w);
        w.end("ContentData");
    }
}

/// `<PresenceValue userID=…>` holding the presentity's `PresenceSubList` (passed through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceValue {
    /// The presentity.
    pub user_id: String,
    /// Unknown attributes and all children (`PresenceSubList` and vendor elements).
    pub ext: Ext,
}

impl PresenceValue {
    pub(crate) fn from_element(el: Element) -> PresenceValue {
        let mut a = Attrs::new(el.attrs);
        let user_id = a.take(&["userID"]).unwrap_or_default();
        PresenceValue {
            user_id,
            ext: Ext {
                attrs: a.rest(),
                children: el.children,
            },
        }
    }

    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.start("PresenceValue");
        w.attr("userID", &self.user_id);
        self.ext.write_attrs(w);
        self.ext.write_children(w);
        w.end("PresenceValue");
    }
}

/// Remove ASCII whitespace (base64 line breaks and padding), byte-wise.
pub(crate) fn strip_ascii_whitespace(s: String) -> String {
    if !s.bytes().any(|b| b.is_ascii_whitespace()) {
        return s;
    }
    let mut bytes = s.into_bytes();
    bytes.retain(|b| !b.is_ascii_whitespace());
    // Removing ASCII bytes from UTF-8 leaves valid UTF-8; the check cannot fail.
    String::from_utf8(bytes).unwrap_or_default()
}
