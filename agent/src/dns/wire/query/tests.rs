use super::*;
use crate::dns::wire::{TYPE_A, TYPE_AAAA, TYPE_ANY};

/// A header with the given first flag byte and section counts.
fn header(id: u16, first: u8, counts: [u16; 4]) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&[first, 0]);
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

/// The question `cart.shop` type A class IN, in wire form.
const QUESTION: &[u8] = b"\x04cart\x04shop\x00\x00\x01\x00\x01";

fn malformed(id: u16, reason: &'static str) -> Result<Query, Error> {
    Err(Error::Malformed {
        id: Some(id),
        reason,
    })
}

#[test]
fn an_encoded_query_reads_back() {
    let msg = encode_query(0x1234, "Cart.Shop.svc.cluster.local", TYPE_AAAA, None);
    assert_eq!(
        parse_query(&msg),
        Ok(Query {
            id: 0x1234,
            recursion_desired: true,
            name: "cart.shop.svc.cluster.local".into(),
            qtype: TYPE_AAAA,
            qclass: CLASS_IN,
            edns: None,
        })
    );
}

#[test]
fn an_encoded_query_with_edns_reads_back() {
    let msg = encode_query(7, "api.example.com", TYPE_A, Some(4096));
    let query = parse_query(&msg).unwrap();
    assert_eq!(query.name, "api.example.com");
    assert_eq!(query.edns, Some(Edns { udp_size: 4096 }));
}

#[test]
fn the_root_and_escaped_names_read_back() {
    let root = encode_query(1, "", TYPE_ANY, None);
    assert_eq!(parse_query(&root).unwrap().name, "");
    let odd = encode_query(1, "a\\.b\\032c.example", TYPE_A, None);
    assert_eq!(parse_query(&odd).unwrap().name, "a\\.b\\032c.example");
}

#[test]
fn the_rd_bit_and_the_class_are_read() {
    let mut msg = header(9, 0, [1, 0, 0, 0]);
    msg.extend_from_slice(b"\x01a\x00\x00\xFF\x00\x03");
    let query = parse_query(&msg).unwrap();
    assert!(!query.recursion_desired);
    assert_eq!((query.qtype, query.qclass), (TYPE_ANY, 3));
}

#[test]
fn a_small_edns_udp_size_reads_as_512() {
    let msg = encode_query(7, "a.b", TYPE_A, Some(100));
    assert_eq!(
        parse_query(&msg).unwrap().edns,
        Some(Edns { udp_size: 512 })
    );
    let msg = encode_query(7, "a.b", TYPE_A, Some(1232));
    assert_eq!(
        parse_query(&msg).unwrap().edns,
        Some(Edns { udp_size: 1232 })
    );
}

#[test]
fn every_truncation_of_a_valid_query_is_malformed() {
    for edns in [None, Some(1232)] {
        let msg = encode_query(0xABCD, "cart.shop.svc.cluster.local", TYPE_A, edns);
        assert!(parse_query(&msg).is_ok());
        for len in 0..msg.len() {
            let prefix = msg.get(..len).unwrap();
            match parse_query(prefix) {
                Err(Error::Malformed { id, .. }) => {
                    assert_eq!(id, (len >= 2).then_some(0xABCD), "length {len}");
                }
                other => panic!("length {len}: {other:?}"),
            }
        }
    }
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut msg = encode_query(3, "cart.shop", TYPE_A, None);
    msg.push(0);
    assert_eq!(parse_query(&msg), malformed(3, "trailing_bytes"));
    let mut msg = encode_query(3, "cart.shop", TYPE_A, Some(1232));
    msg.extend_from_slice(b"garbage");
    assert_eq!(parse_query(&msg), malformed(3, "trailing_bytes"));
}

#[test]
fn a_response_is_not_a_query() {
    let mut msg = header(5, flags::QR, [1, 0, 0, 0]);
    msg.extend_from_slice(QUESTION);
    assert_eq!(parse_query(&msg), Err(Error::NotAQuery { id: 5 }));
}

#[test]
fn other_opcodes_are_not_implemented() {
    // Opcode 2 (STATUS), and opcode 5 (UPDATE) with a body this parser cannot read.
    let mut msg = header(6, 2 << 3, [1, 0, 0, 0]);
    msg.extend_from_slice(QUESTION);
    assert_eq!(parse_query(&msg), Err(Error::NotImplemented { id: 6 }));
    let mut msg = header(6, (5 << 3) | flags::RD, [1, 3, 2, 1]);
    msg.extend_from_slice(b"\xFF\xFF");
    assert_eq!(parse_query(&msg), Err(Error::NotImplemented { id: 6 }));
}

#[test]
fn the_question_count_must_be_one() {
    let mut none = header(8, 0, [0, 0, 0, 0]);
    assert_eq!(parse_query(&none), malformed(8, "question_count"));
    none.extend_from_slice(QUESTION);
    assert_eq!(parse_query(&none), malformed(8, "question_count"));
    let mut two = header(8, 0, [2, 0, 0, 0]);
    two.extend_from_slice(QUESTION);
    two.extend_from_slice(QUESTION);
    assert_eq!(parse_query(&two), malformed(8, "question_count"));
}

#[test]
fn answers_and_authorities_are_malformed() {
    let mut msg = header(8, 0, [1, 1, 0, 0]);
    msg.extend_from_slice(QUESTION);
    assert_eq!(parse_query(&msg), malformed(8, "answer_count"));
    let mut msg = header(8, 0, [1, 0, 1, 0]);
    msg.extend_from_slice(QUESTION);
    assert_eq!(parse_query(&msg), malformed(8, "authority_count"));
}

#[test]
fn a_pointer_in_the_question_is_rejected() {
    // The question is the first name: any pointer in it points at itself, ahead, or
    // into the header.
    for name in [&b"\xC0\x0C"[..], b"\x01a\xC0\x0C", b"\xC0\x20", b"\xC0\x00"] {
        let mut msg = header(4, 0, [1, 0, 0, 0]);
        msg.extend_from_slice(name);
        msg.extend_from_slice(b"\x00\x01\x00\x01");
        assert!(
            matches!(parse_query(&msg), Err(Error::Malformed { id: Some(4), .. })),
            "{name:?}"
        );
    }
}

#[test]
fn oversized_labels_and_names_are_rejected() {
    let mut msg = header(4, 0, [1, 0, 0, 0]);
    msg.push(64);
    msg.extend_from_slice(&[b'a'; 64]);
    msg.extend_from_slice(b"\x00\x00\x01\x00\x01");
    assert_eq!(parse_query(&msg), malformed(4, "label_type"));

    let mut msg = header(4, 0, [1, 0, 0, 0]);
    for _ in 0..5 {
        msg.push(60);
        msg.extend_from_slice(&[b'a'; 60]);
    }
    msg.extend_from_slice(b"\x00\x00\x01\x00\x01");
    assert_eq!(parse_query(&msg), malformed(4, "name_too_long"));
}

/// A query for `cart.shop` followed by the given additional records.
fn with_additional(count: u16, records: &[u8]) -> Vec<u8> {
    let mut msg = header(2, flags::RD, [1, 0, 0, count]);
    msg.extend_from_slice(QUESTION);
    msg.extend_from_slice(records);
    msg
}

/// An OPT record with the given UDP size and data.
fn opt(udp_size: u16, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 41];
    out.extend_from_slice(&udp_size.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0x80, 0]);
    out.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn an_opt_record_with_options_is_read() {
    // A client cookie (option 10, 8 bytes) and an empty padding option (12).
    let data = b"\x00\x0A\x00\x08abcdefgh\x00\x0C\x00\x00";
    let query = parse_query(&with_additional(1, &opt(4096, data))).unwrap();
    assert_eq!(query.edns, Some(Edns { udp_size: 4096 }));
}

#[test]
fn options_that_overrun_the_opt_data_are_malformed() {
    for data in [&b"\x00\x0A\x00\x09abcdefgh"[..], b"\x00\x0A\x00", b"\x00"] {
        let msg = with_additional(1, &opt(1232, data));
        assert_eq!(parse_query(&msg), malformed(2, "opt_options"), "{data:?}");
    }
}

#[test]
fn a_second_opt_record_is_malformed() {
    let mut records = opt(1232, b"");
    records.extend(opt(1232, b""));
    assert_eq!(
        parse_query(&with_additional(2, &records)),
        malformed(2, "second_opt")
    );
}

#[test]
fn an_opt_record_must_be_owned_by_the_root() {
    let mut record = b"\x01x".to_vec();
    record.extend(opt(1232, b""));
    assert_eq!(
        parse_query(&with_additional(1, &record)),
        malformed(2, "opt_not_root")
    );
}

#[test]
fn other_additional_records_are_skipped() {
    // An A record owned by the question's name (a pointer to it), then an OPT record.
    let mut records = b"\xC0\x0C\x00\x01\x00\x01\x00\x00\x00\x3C\x00\x04\x0A\x00\x00\x01".to_vec();
    records.extend(opt(2048, b""));
    let query = parse_query(&with_additional(2, &records)).unwrap();
    assert_eq!(query.name, "cart.shop");
    assert_eq!(query.edns, Some(Edns { udp_size: 2048 }));
}

#[test]
fn additional_records_must_fit() {
    // The record says 8 bytes of data but has 4.
    let records = b"\xC0\x0C\x00\x01\x00\x01\x00\x00\x00\x3C\x00\x08\x0A\x00\x00\x01";
    assert_eq!(
        parse_query(&with_additional(1, records)),
        malformed(2, "truncated_record")
    );
    // The count says two records and there is one.
    assert_eq!(
        parse_query(&with_additional(2, &opt(1232, b""))),
        malformed(2, "truncated_name")
    );
    // A looping pointer in an additional record's name.
    let records = b"\xC0\x1B\x00\x01\x00\x01\x00\x00\x00\x3C\x00\x00";
    assert_eq!(
        parse_query(&with_additional(1, records)),
        malformed(2, "pointer_not_backwards")
    );
}

#[test]
fn short_inputs_report_what_they_can() {
    assert_eq!(
        parse_query(&[]),
        Err(Error::Malformed {
            id: None,
            reason: "truncated_id"
        })
    );
    assert_eq!(
        parse_query(&[0x12]),
        Err(Error::Malformed {
            id: None,
            reason: "truncated_id"
        })
    );
    assert_eq!(
        parse_query(&[0x12, 0x34, 0]),
        malformed(0x1234, "truncated_header")
    );
}

/// A small deterministic generator for the mutation tests (xorshift).
struct Bytes(u64);

impl Bytes {
    fn draw(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn no_mutation_of_a_query_panics() {
    let mut bytes = Bytes(0x9E37_79B9_7F4A_7C15);
    let mut base = encode_query(1, "cart.shop.svc.cluster.local", TYPE_A, Some(1232));
    base.extend_from_slice(b"\xC0\x0C\x00\x01\x00\x01\x00\x00\x00\x3C\x00\x04\x0A\x00\x00\x01");
    if let Some(count) = base.get_mut(11) {
        *count = 2;
    }
    assert!(parse_query(&base).is_ok());
    for _ in 0..20_000 {
        let mut msg = base.clone();
        for _ in 0..=bytes.draw() % 4 {
            let at = (bytes.draw() % msg.len() as u64) as usize;
            if let Some(byte) = msg.get_mut(at) {
                *byte = bytes.draw() as u8;
            }
        }
        let cut = (bytes.draw() % (msg.len() as u64 + 1)) as usize;
        let _ = parse_query(msg.get(..cut).unwrap_or(&msg));
        let _ = parse_query(&msg);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut bytes = Bytes(42);
    for _ in 0..20_000 {
        let len = (bytes.draw() % 64) as usize;
        let mut msg: Vec<u8> = (0..len).map(|_| bytes.draw() as u8).collect();
        // Often a plausible header, so the parser gets past it.
        if len > 12 && bytes.draw().is_multiple_of(2) {
            msg.splice(2..12, [0, 0, 0, 1, 0, 0, 0, 0, 0, (bytes.draw() % 3) as u8]);
        }
        let _ = parse_query(&msg);
    }
}
