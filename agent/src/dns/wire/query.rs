//! Reading the queries pods send, and writing queries for tests and load generators.

use super::{
    CLASS_IN, Edns, Error, HEADER_LEN, Query, TYPE_OPT, flags, message_id,
    name::{NameWriter, parse_text},
    push_opt,
    reader::{Reader, Reason},
};

/// Reads a standard query: QR=0, opcode 0, one question, no answer or authority
/// records. The additional section may hold one OPT record, whose UDP size is kept
/// (raised to 512 when below); other additional records are checked for size and
/// skipped. The message must end exactly after its last record.
///
/// A response (QR=1) is [`Error::NotAQuery`]; another opcode is
/// [`Error::NotImplemented`]; anything truncated or inconsistent is
/// [`Error::Malformed`]. No input makes this panic.
pub fn parse_query(buf: &[u8]) -> Result<Query, Error> {
    let Some(id) = message_id(buf) else {
        return Err(Error::Malformed {
            id: None,
            reason: "truncated_id",
        });
    };
    let malformed = move |reason| Error::Malformed {
        id: Some(id),
        reason,
    };
    let mut r = Reader::new(buf, 2);
    let [first, _] = r.u16("truncated_header").map_err(malformed)?.to_be_bytes();
    let counts = Counts::read(&mut r).map_err(malformed)?;
    if first & flags::QR != 0 {
        return Err(Error::NotAQuery { id });
    }
    if first & flags::OPCODE != 0 {
        return Err(Error::NotImplemented { id });
    }
    let (name, qtype, qclass, edns) = read_body(&mut r, &counts).map_err(malformed)?;
    Ok(Query {
        id,
        recursion_desired: first & flags::RD != 0,
        name,
        qtype,
        qclass,
        edns,
    })
}

/// The smallest UDP size a query's OPT record can ask for (RFC 6891 section 6.2.3).
const MIN_UDP_SIZE: u16 = 512;

/// The four section counts of a header.
struct Counts {
    questions: u16,
    answers: u16,
    authorities: u16,
    additionals: u16,
}

impl Counts {
    fn read(r: &mut Reader<'_>) -> Result<Self, Reason> {
        Ok(Counts {
            questions: r.u16("truncated_header")?,
            answers: r.u16("truncated_header")?,
            authorities: r.u16("truncated_header")?,
            additionals: r.u16("truncated_header")?,
        })
    }
}

/// The question and the OPT record of a query whose header has been read.
type Body = (String, u16, u16, Option<Edns>);

fn read_body(r: &mut Reader<'_>, counts: &Counts) -> Result<Body, Reason> {
    if counts.questions != 1 {
        return Err("question_count");
    }
    if counts.answers != 0 {
        return Err("answer_count");
    }
    if counts.authorities != 0 {
        return Err("authority_count");
    }
    let name = r.name()?;
    let qtype = r.u16("truncated_question")?;
    let qclass = r.u16("truncated_question")?;
    let edns = additionals(r, counts.additionals)?.map(|e| Edns {
        udp_size: e.udp_size.max(MIN_UDP_SIZE),
    });
    if !r.at_end() {
        return Err("trailing_bytes");
    }
    Ok((name, qtype, qclass, edns))
}

/// Reads `count` additional records: at most one OPT record (owned by the root, its
/// options whole), whose class is the UDP size it advertises; others are skipped.
pub(super) fn additionals(r: &mut Reader<'_>, count: u16) -> Result<Option<Edns>, Reason> {
    let mut edns = None;
    for _ in 0..count {
        let record = r.record("truncated_record")?;
        if record.rtype == TYPE_OPT {
            if edns.is_some() {
                return Err("second_opt");
            }
            if !record.name.is_empty() {
                return Err("opt_not_root");
            }
            check_options(record.data)?;
            edns = Some(Edns {
                udp_size: record.class,
            });
        }
    }
    Ok(edns)
}

/// Checks that the data of an OPT record is a sequence of whole options (code, length,
/// value).
fn check_options(data: &[u8]) -> Result<(), Reason> {
    let mut r = Reader::new(data, 0);
    while !r.at_end() {
        r.u16("opt_options")?;
        let len = r.u16("opt_options")?;
        r.bytes(usize::from(len), "opt_options")?;
    }
    Ok(())
}

/// A standard query with RD=1 for `name` (text form) of type `qtype` and class IN, with
/// an OPT record advertising `edns` as its UDP size when given.
///
/// # Panics
///
/// When `name` is not a valid name (an empty label, a label over 63 bytes, a name over
/// 255 bytes, a bad escape).
pub fn encode_query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let labels = parse_text(name).unwrap_or_else(|| panic!("not a valid DNS name: {name:?}"));
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 2 + 4 + 11);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[flags::RD, 0]);
    for count in [1, 0, 0, u16::from(edns.is_some())] {
        out.extend_from_slice(&u16::to_be_bytes(count));
    }
    NameWriter::default().write(&mut out, &labels);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some(udp_size) = edns {
        push_opt(&mut out, udp_size);
    }
    out
}

#[cfg(test)]
mod tests;
