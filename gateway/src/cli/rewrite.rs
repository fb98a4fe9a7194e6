//! `ssp-gateway ssp rewrite`: rewrite one SSP message as the gateway would, for operators.

use std::io::Read;
use std::path::Path;

use crate::config::Config;
use crate::directory::Directory;
use crate::rewrite::{Direction, PeerView, Rewriter};
use crate::ssp::{Body, Codec, NS_WV_SSP_13};

/// What the tool produced: the rewritten message and the route-by IDs.
#[derive(Debug)]
pub struct Rewritten {
    /// The message, canonical XML.
    pub xml: String,
    /// Route-by IDs of each request transaction, after rewriting.
    pub route_by: Vec<String>,
}

/// One-line error for the tool.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Config problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Directory problem.
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
    /// Input could not be read.
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    /// Not a valid SSP message.
    #[error("{0}: invalid SSP message (SSP status 400): {1}")]
    Parse(String, crate::ssp::ParseError),
    /// `--peer` names no peer.
    #[error("--peer {0}: no [[peer]] with that domain in the config")]
    UnknownPeer(String),
}

/// Read `input` (`-` for stdin) and rewrite it.
pub fn run(
    config: &Path,
    direction: Direction,
    peer: Option<&str>,
    input: &str,
) -> Result<Rewritten, ToolError> {
    let cfg = Config::load(config)?;
    let dir = Directory::load(&cfg.directory)?;
    let mut body = Vec::new();
    if input == "-" {
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| ToolError::Read("stdin".into(), e))?;
    } else {
        body = std::fs::read(input).map_err(|e| ToolError::Read(input.into(), e))?;
    }
    rewrite_bytes(&cfg, &dir, direction, peer, &body).map_err(|e| match e {
        ToolError::Parse(_, p) => ToolError::Parse(
            if input == "-" {
                "stdin".into()
            } else {
                input.into()
            },
            p,
        ),
        other => other,
    })
}

/// Rewrite a body with a loaded config and directory.
pub fn rewrite_bytes(
    cfg: &Config,
    dir: &Directory,
    direction: Direction,
    peer: Option<&str>,
    body: &[u8],
) -> Result<Rewritten, ToolError> {
    let codec = Codec {
        extra_namespaces: cfg.operator.extra_namespaces.clone(),
        ..Codec::default()
    };
    let mut msg = codec
        .parse(body)
        .map_err(|e| ToolError::Parse(String::new(), e))?;
    let rw = Rewriter::new(cfg);
    let peer_entry = match peer {
        Some(p) => Some(
            cfg.peer(p)
                .ok_or_else(|| ToolError::UnknownPeer(p.to_owned()))?,
        ),
        None => None,
    };
    let view = PeerView {
        style: peer_entry.map(|p| p.id_style).unwrap_or_default(),
        domain: peer_entry.map(|p| p.domain.as_str()),
    };
    let namespace = peer_entry
        .map(|p| p.namespace.as_str())
        .unwrap_or(NS_WV_SSP_13);
    let xml = match direction {
        Direction::Outbound => rw.emit_outbound(dir, &mut msg, view, namespace),
        Direction::Inbound => {
            rw.rewrite(dir, &mut msg, Direction::Inbound, view);
            msg.emit(namespace)
        }
    };
    let mut route_by = Vec::new();
    if let Body::Session(s) = &msg.body {
        for t in &s.transactions {
            for r in t.primitive.route_by() {
                route_by.push(match r {
                    crate::ssp::RouteBy::SearchNumber(n) => {
                        cfg.plan.normalise(&n).map(|e| format!("+{e}")).unwrap_or(n)
                    }
                    crate::ssp::RouteBy::Id(id) => id,
                });
            }
        }
    }
    Ok(Rewritten { xml, route_by })
}
