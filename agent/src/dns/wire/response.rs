//! Writing the answers the agent gives, and reading answers for tests.

use super::{
    ADVERTISED_UDP_SIZE, CLASS_IN, Edns, Error, HEADER_LEN, Query, RCODE_SERVFAIL, Record,
    RecordData, TYPE_A, TYPE_AAAA, TYPE_CNAME, flags, message_id,
    name::{NameWriter, parse_text},
    push_opt, query,
    reader::{RawRecord, Reader, Reason, read_name},
};

/// The answer to `query`: its id, RD bit and question (the name written from
/// `query.name`), QR=1, AA as `authoritative`, RA=1, the low four bits of `rcode`, the
/// `answers` (class IN) and, when the query had an OPT record, an OPT record
/// advertising [`ADVERTISED_UDP_SIZE`]. Names repeated from earlier in the message are
/// compressed.
///
/// When the message would be longer than `max_len`, every answer is dropped and TC is
/// set, so that the client asks again over TCP; the question and the OPT record stay
/// (a `max_len` too small even for them gives a message longer than it).
///
/// An answer whose name or CNAME target is not a valid name is left out. When
/// `query.name` is not a valid name (it always is when the query came from
/// [`super::parse_query`]), the answer has no question, no answers and rcode SERVFAIL.
pub fn response(
    query: &Query,
    rcode: u8,
    answers: &[Record],
    authoritative: bool,
    max_len: usize,
) -> Vec<u8> {
    let full = build(query, rcode, answers, authoritative, false);
    if full.len() <= max_len {
        return full;
    }
    build(query, rcode, &[], authoritative, true)
}

fn build(
    query: &Query,
    rcode: u8,
    answers: &[Record],
    authoritative: bool,
    truncated: bool,
) -> Vec<u8> {
    let question = parse_text(&query.name);
    let rcode = if question.is_some() {
        rcode
    } else {
        RCODE_SERVFAIL
    };
    let mut first = flags::QR;
    if query.recursion_desired {
        first |= flags::RD;
    }
    if authoritative {
        first |= flags::AA;
    }
    if truncated {
        first |= flags::TC;
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&[first, flags::RA | (rcode & flags::RCODE)]);
    let counts = [
        u16::from(question.is_some()),
        0,
        0,
        u16::from(query.edns.is_some()),
    ];
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
    let mut names = NameWriter::default();
    if let Some(labels) = &question {
        names.write(&mut out, labels);
        out.extend_from_slice(&query.qtype.to_be_bytes());
        out.extend_from_slice(&query.qclass.to_be_bytes());
        let mut written: u16 = 0;
        for record in answers {
            if written == u16::MAX {
                break;
            }
            if push_record(&mut out, &mut names, record) {
                written += 1;
            }
        }
        if let Some(count) = out.get_mut(6..8) {
            count.copy_from_slice(&written.to_be_bytes());
        }
    }
    if query.edns.is_some() {
        push_opt(&mut out, ADVERTISED_UDP_SIZE);
    }
    out
}

/// Appends `record`, unless one of its names is not valid; says whether it did.
fn push_record(out: &mut Vec<u8>, names: &mut NameWriter, record: &Record) -> bool {
    let Some(owner) = parse_text(&record.name) else {
        return false;
    };
    let target = match &record.data {
        RecordData::Cname(target) => match parse_text(target) {
            Some(labels) => labels,
            None => return false,
        },
        RecordData::A(_) | RecordData::Aaaa(_) => Vec::new(),
    };
    names.write(out, &owner);
    out.extend_from_slice(&record.data.rtype().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    match &record.data {
        RecordData::A(addr) => {
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&addr.octets());
        }
        RecordData::Aaaa(addr) => {
            out.extend_from_slice(&16u16.to_be_bytes());
            out.extend_from_slice(&addr.octets());
        }
        RecordData::Cname(_) => {
            let len_at = out.len();
            out.extend_from_slice(&[0, 0]);
            names.write(out, &target);
            // A name takes at most 255 bytes.
            let len = u16::try_from(out.len() - len_at - 2).unwrap_or(0);
            if let Some(bytes) = out.get_mut(len_at..len_at + 2) {
                bytes.copy_from_slice(&len.to_be_bytes());
            }
        }
    }
    true
}

/// The answer to a message [`super::parse_query`] rejected: a bare header with the
/// request's id, QR=1, RA=1, the low four bits of `rcode` and every count zero. The
/// request's opcode and RD bit are kept when its whole header is there. `None` when the
/// request is shorter than its 2-byte id.
///
/// Use [`super::RCODE_FORMERR`] for [`Error::Malformed`] and
/// [`super::RCODE_NOTIMP`] for [`Error::NotImplemented`].
pub fn error_response(buf: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let id = message_id(buf)?;
    let mut first = flags::QR;
    if buf.len() >= HEADER_LEN
        && let Some(request) = buf.get(2)
    {
        first |= request & (flags::OPCODE | flags::RD);
    }
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[first, flags::RA | (rcode & flags::RCODE)]);
    out.extend_from_slice(&[0; 8]);
    Some(out)
}

/// The question of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name, in text form.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

/// A response as [`parse_response`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    /// The AA bit: the answer is authoritative.
    pub aa: bool,
    /// The TC bit: the answer was truncated.
    pub tc: bool,
    /// The RD bit, echoed from the query.
    pub rd: bool,
    /// The RA bit: the server offers recursion.
    pub ra: bool,
    /// The header's four-bit response code.
    pub rcode: u8,
    /// The question, when the response has one.
    pub question: Option<Question>,
    /// The A, AAAA and CNAME records of class IN in the answer section, in order.
    /// Records of other types and classes are skipped.
    pub answers: Vec<Record>,
    /// The OPT record, its UDP size as written.
    pub edns: Option<Edns>,
}

/// Reads a response (QR=1) with at most one question, for tests and load generators.
/// Authority records are skipped. Anything truncated or inconsistent, a query, or
/// bytes after the last record are [`Error::Malformed`].
pub fn parse_response(buf: &[u8]) -> Result<Response, Error> {
    let Some(id) = message_id(buf) else {
        return Err(Error::Malformed {
            id: None,
            reason: "truncated_id",
        });
    };
    read_response(buf, id).map_err(|reason| Error::Malformed {
        id: Some(id),
        reason,
    })
}

fn read_response(buf: &[u8], id: u16) -> Result<Response, Reason> {
    let mut r = Reader::new(buf, 2);
    let [first, second] = r.u16("truncated_header")?.to_be_bytes();
    let questions = r.u16("truncated_header")?;
    let answer_count = r.u16("truncated_header")?;
    let authorities = r.u16("truncated_header")?;
    let additionals = r.u16("truncated_header")?;
    if first & flags::QR == 0 {
        return Err("not_a_response");
    }
    let question = match questions {
        0 => None,
        1 => Some(Question {
            name: r.name()?,
            qtype: r.u16("truncated_question")?,
            qclass: r.u16("truncated_question")?,
        }),
        _ => return Err("question_count"),
    };
    let mut answers = Vec::new();
    for _ in 0..answer_count {
        let record = r.record("truncated_record")?;
        if let Some(data) = record_data(buf, &record)? {
            answers.push(Record {
                name: record.name,
                ttl: record.ttl,
                data,
            });
        }
    }
    for _ in 0..authorities {
        r.record("truncated_record")?;
    }
    let edns = query::additionals(&mut r, additionals)?;
    if !r.at_end() {
        return Err("trailing_bytes");
    }
    Ok(Response {
        id,
        aa: first & flags::AA != 0,
        tc: first & flags::TC != 0,
        rd: first & flags::RD != 0,
        ra: second & flags::RA != 0,
        rcode: second & flags::RCODE,
        question,
        answers,
        edns,
    })
}

/// The data of an A, AAAA or CNAME record of class IN; `None` for other records.
fn record_data(msg: &[u8], record: &RawRecord<'_>) -> Result<Option<RecordData>, Reason> {
    if record.class != CLASS_IN {
        return Ok(None);
    }
    let data = match record.rtype {
        TYPE_A => {
            let octets: [u8; 4] = record.data.try_into().map_err(|_| "a_length")?;
            RecordData::A(octets.into())
        }
        TYPE_AAAA => {
            let octets: [u8; 16] = record.data.try_into().map_err(|_| "aaaa_length")?;
            RecordData::Aaaa(octets.into())
        }
        TYPE_CNAME => {
            let (target, end) = read_name(msg, record.data_offset)?;
            if end != record.data_offset + record.data.len() {
                return Err("cname_length");
            }
            RecordData::Cname(target)
        }
        _ => return Ok(None),
    };
    Ok(Some(data))
}

#[cfg(test)]
mod tests;
