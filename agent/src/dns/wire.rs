//! The DNS message format of RFC 1035, with the EDNS(0) OPT record of RFC 6891.
//!
//! [`parse_query`] reads what a pod sends, [`response`] writes what the agent answers
//! itself and [`error_response`] answers what cannot be read. [`message_id`] and
//! [`patch_id`] let a forwarder rewrite ids. [`encode_query`] and [`parse_response`] are
//! the client side, for tests and load generators.
//!
//! Names are text in the presentation format of RFC 1035 section 5.1: labels joined by
//! dots, ASCII letters lower-cased, no trailing dot, the root as `""`. Label bytes that
//! are not printable ASCII are written `\DDD` (decimal), and a dot or backslash inside a
//! label is escaped with a backslash, so every name read from the wire encodes back to
//! the same bytes (up to case).

mod name;
mod query;
mod reader;
mod response;

use std::net::{Ipv4Addr, Ipv6Addr};

pub use query::{encode_query, parse_query};
pub use response::{Question, Response, error_response, parse_response, response};

/// Type A: an IPv4 address.
pub const TYPE_A: u16 = 1;
/// Type CNAME: the canonical name of an alias.
pub const TYPE_CNAME: u16 = 5;
/// Type AAAA: an IPv6 address.
pub const TYPE_AAAA: u16 = 28;
/// Type OPT: the EDNS(0) pseudo-record of the additional section.
pub const TYPE_OPT: u16 = 41;
/// Query type ANY (`*`): every record of the name.
pub const TYPE_ANY: u16 = 255;
/// Class IN: the Internet.
pub const CLASS_IN: u16 = 1;

/// No error.
pub const RCODE_NOERROR: u8 = 0;
/// The server could not read the query.
pub const RCODE_FORMERR: u8 = 1;
/// The server failed to answer.
pub const RCODE_SERVFAIL: u8 = 2;
/// The name does not exist.
pub const RCODE_NXDOMAIN: u8 = 3;
/// The server does not implement the kind of query (its opcode).
pub const RCODE_NOTIMP: u8 = 4;
/// The server refuses to answer.
pub const RCODE_REFUSED: u8 = 5;

/// The largest message over UDP when the query has no OPT record.
pub const UDP_PLAIN_LIMIT: usize = 512;
/// The largest message over TCP, where a 2-byte length precedes each message.
pub const TCP_LIMIT: usize = 65_535;
/// The UDP payload size the agent advertises in its OPT records: the size that avoids
/// IP fragmentation on common paths (the value of DNS Flag Day 2020).
pub const ADVERTISED_UDP_SIZE: u16 = 1232;

/// The length of the fixed header.
const HEADER_LEN: usize = 12;

/// A standard query (opcode 0) with a single question, as [`parse_query`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The id the answer must echo.
    pub id: u16,
    /// The RD bit, echoed in the answer.
    pub recursion_desired: bool,
    /// The question's name: lower-cased, dotted, without a trailing dot; the root is `""`.
    pub name: String,
    /// The question's type, such as [`TYPE_A`].
    pub qtype: u16,
    /// The question's class, normally [`CLASS_IN`].
    pub qclass: u16,
    /// The query's OPT record, if it has one.
    pub edns: Option<Edns>,
}

/// What an OPT record (RFC 6891) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The largest UDP payload the sender accepts. In a query, values below 512 read as
    /// 512; in a response, as they are.
    pub udp_size: u16,
}

/// The data of a record the agent answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// An IPv4 address (type A).
    A(Ipv4Addr),
    /// An IPv6 address (type AAAA).
    Aaaa(Ipv6Addr),
    /// The canonical name the record's name is an alias of (type CNAME).
    Cname(String),
}

impl RecordData {
    /// The record type of this data.
    pub fn rtype(&self) -> u16 {
        match self {
            RecordData::A(_) => TYPE_A,
            RecordData::Aaaa(_) => TYPE_AAAA,
            RecordData::Cname(_) => TYPE_CNAME,
        }
    }
}

/// A resource record of class IN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The owner name, in the text form of the module documentation.
    pub name: String,
    /// How long, in seconds, the record may be cached.
    pub ttl: u32,
    /// The type and data.
    pub data: RecordData,
}

/// Why a message could not be read as a query the agent answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The message is truncated or inconsistent: answer [`RCODE_FORMERR`] with
    /// [`error_response`]. `id` is the message's id when its first two bytes exist.
    #[error("malformed DNS message ({reason})")]
    Malformed {
        id: Option<u16>,
        reason: &'static str,
    },
    /// The opcode is not 0 (a standard query): answer [`RCODE_NOTIMP`] with
    /// [`error_response`].
    #[error("DNS opcode not implemented")]
    NotImplemented { id: u16 },
    /// The message is a response (QR=1), not a query. Drop it without answering, as
    /// answering a response could make two servers answer each other forever.
    #[error("DNS message is a response, not a query")]
    NotAQuery { id: u16 },
}

impl Error {
    /// A short snake_case label of the error, suitable for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Malformed { reason, .. } => reason,
            Error::NotImplemented { .. } => "not_implemented",
            Error::NotAQuery { .. } => "not_a_query",
        }
    }

    /// The id of the message, when it could be read.
    pub fn id(&self) -> Option<u16> {
        match self {
            Error::Malformed { id, .. } => *id,
            Error::NotImplemented { id } | Error::NotAQuery { id } => Some(*id),
        }
    }
}

/// The id of a message: its first two bytes, or `None` when it is shorter.
pub fn message_id(msg: &[u8]) -> Option<u16> {
    match msg {
        [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

/// Sets the id of a message. A message shorter than two bytes is left as it is.
pub fn patch_id(msg: &mut [u8], id: u16) {
    if let Some(bytes) = msg.get_mut(..2) {
        bytes.copy_from_slice(&id.to_be_bytes());
    }
}

/// Appends an OPT record advertising `udp_size`: owned by the root, extended rcode and
/// version 0, no flags, no options.
fn push_opt(out: &mut Vec<u8>, udp_size: u16) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&udp_size.to_be_bytes());
    out.extend_from_slice(&[0; 6]);
}

/// The bits of the two flag bytes of the header (RFC 1035 section 4.1.1).
mod flags {
    /// First byte: the message is a response.
    pub(super) const QR: u8 = 0x80;
    /// First byte: the opcode, four bits.
    pub(super) const OPCODE: u8 = 0x78;
    /// First byte: the answer is authoritative.
    pub(super) const AA: u8 = 0x04;
    /// First byte: the message was truncated.
    pub(super) const TC: u8 = 0x02;
    /// First byte: recursion desired.
    pub(super) const RD: u8 = 0x01;
    /// Second byte: recursion available.
    pub(super) const RA: u8 = 0x80;
    /// Second byte: the response code, four bits.
    pub(super) const RCODE: u8 = 0x0F;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_reads_the_first_two_bytes() {
        assert_eq!(message_id(&[]), None);
        assert_eq!(message_id(&[0x12]), None);
        assert_eq!(message_id(&[0x12, 0x34]), Some(0x1234));
        assert_eq!(message_id(&[0xAB, 0xCD, 0x01, 0x00]), Some(0xABCD));
    }

    #[test]
    fn patch_id_rewrites_the_id_and_nothing_else() {
        let mut msg = encode_query(0x1111, "cart.shop.svc.cluster.local", TYPE_A, None);
        let before = msg.clone();
        patch_id(&mut msg, 0xBEEF);
        assert_eq!(message_id(&msg), Some(0xBEEF));
        assert_eq!(msg.get(2..), before.get(2..));
        assert_eq!(parse_query(&msg).map(|q| q.id), Ok(0xBEEF));
    }

    #[test]
    fn patch_id_leaves_short_messages_alone() {
        let mut empty: [u8; 0] = [];
        patch_id(&mut empty, 7);
        let mut one = [9u8];
        patch_id(&mut one, 7);
        assert_eq!(one, [9]);
    }

    #[test]
    fn errors_report_their_id_and_reason() {
        let malformed = Error::Malformed {
            id: Some(5),
            reason: "truncated_header",
        };
        assert_eq!(malformed.id(), Some(5));
        assert_eq!(malformed.reason(), "truncated_header");
        assert_eq!(
            malformed.to_string(),
            "malformed DNS message (truncated_header)"
        );
        let anonymous = Error::Malformed {
            id: None,
            reason: "truncated_id",
        };
        assert_eq!(anonymous.id(), None);
        assert_eq!(Error::NotImplemented { id: 9 }.id(), Some(9));
        assert_eq!(Error::NotImplemented { id: 9 }.reason(), "not_implemented");
        assert_eq!(Error::NotAQuery { id: 3 }.id(), Some(3));
        assert_eq!(Error::NotAQuery { id: 3 }.reason(), "not_a_query");
    }

    #[test]
    fn record_data_knows_its_type() {
        assert_eq!(RecordData::A(Ipv4Addr::LOCALHOST).rtype(), TYPE_A);
        assert_eq!(RecordData::Aaaa(Ipv6Addr::LOCALHOST).rtype(), TYPE_AAAA);
        assert_eq!(RecordData::Cname("a.b".into()).rtype(), TYPE_CNAME);
    }
}
