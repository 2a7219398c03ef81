use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::dns::wire::{
    RCODE_FORMERR, RCODE_NOERROR, RCODE_NOTIMP, RCODE_NXDOMAIN, TCP_LIMIT, TYPE_ANY,
    UDP_PLAIN_LIMIT, encode_query, parse_query,
};

fn query(name: &str, qtype: u16, edns: Option<u16>) -> Query {
    parse_query(&encode_query(0x4242, name, qtype, edns)).unwrap()
}

fn a(name: &str, last: u8) -> Record {
    Record {
        name: name.into(),
        ttl: 30,
        data: RecordData::A(Ipv4Addr::new(10, 96, 0, last)),
    }
}

const NAME: &str = "cart.shop.svc.cluster.local";

#[test]
fn an_answer_reads_back() {
    let q = query(NAME, TYPE_A, None);
    let answers = [a(NAME, 10), a(NAME, 11)];
    let msg = response(&q, RCODE_NOERROR, &answers, true, UDP_PLAIN_LIMIT);
    assert_eq!(
        parse_response(&msg),
        Ok(Response {
            id: 0x4242,
            aa: true,
            tc: false,
            rd: true,
            ra: true,
            rcode: RCODE_NOERROR,
            question: Some(Question {
                name: NAME.into(),
                qtype: TYPE_A,
                qclass: CLASS_IN,
            }),
            answers: answers.to_vec(),
            edns: None,
        })
    );
}

#[test]
fn aaaa_and_cname_records_read_back() {
    let q = query("www.example.com", TYPE_ANY, None);
    let answers = [
        Record {
            name: "www.example.com".into(),
            ttl: 300,
            data: RecordData::Cname("edge.example.com".into()),
        },
        Record {
            name: "edge.example.com".into(),
            ttl: 30,
            data: RecordData::Aaaa(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        },
        Record {
            name: "edge.example.com".into(),
            ttl: 30,
            data: RecordData::A(Ipv4Addr::new(203, 0, 113, 5)),
        },
    ];
    let msg = response(&q, RCODE_NOERROR, &answers, false, TCP_LIMIT);
    let parsed = parse_response(&msg).unwrap();
    assert!(!parsed.aa);
    assert_eq!(parsed.answers, answers);
}

#[test]
fn answer_names_point_at_the_question() {
    let q = query(NAME, TYPE_A, None);
    let msg = response(&q, RCODE_NOERROR, &[a(NAME, 10)], true, UDP_PLAIN_LIMIT);
    // Header, question name (29 bytes), type and class; then the answer's name.
    let answer = HEADER_LEN + 29 + 4;
    assert_eq!(msg.get(answer..answer + 2), Some(&[0xC0, 0x0C][..]));
    assert_eq!(msg.len(), answer + 2 + 10 + 4);
}

#[test]
fn a_cname_target_shares_the_question_suffix() {
    let q = query("www.example.com", TYPE_A, None);
    let record = Record {
        name: "www.example.com".into(),
        ttl: 30,
        data: RecordData::Cname("edge.example.com".into()),
    };
    let msg = response(&q, RCODE_NOERROR, &[record], false, UDP_PLAIN_LIMIT);
    // The target is "edge" then a pointer to "example.com" at offset 16.
    assert_eq!(
        msg.get(msg.len() - 9..),
        Some(&b"\x00\x07\x04edge\xC0\x10"[..])
    );
}

#[test]
fn nxdomain_has_the_question_and_no_answers() {
    let q = query("nope.shop.svc.cluster.local", TYPE_A, None);
    let parsed = parse_response(&response(&q, RCODE_NXDOMAIN, &[], true, 512)).unwrap();
    assert_eq!(parsed.rcode, RCODE_NXDOMAIN);
    assert!(parsed.aa);
    assert_eq!(parsed.question.unwrap().name, "nope.shop.svc.cluster.local");
    assert!(parsed.answers.is_empty());
}

#[test]
fn forty_a_records_do_not_fit_in_512_bytes() {
    let q = query(NAME, TYPE_A, None);
    let answers: Vec<Record> = (0..40).map(|i| a(NAME, i)).collect();
    let msg = response(&q, RCODE_NOERROR, &answers, true, UDP_PLAIN_LIMIT);
    assert!(msg.len() <= UDP_PLAIN_LIMIT);
    let parsed = parse_response(&msg).unwrap();
    assert!(parsed.tc);
    assert!(parsed.answers.is_empty());
    assert_eq!(parsed.question.unwrap().name, NAME);
    assert_eq!(parsed.rcode, RCODE_NOERROR);

    let msg = response(&q, RCODE_NOERROR, &answers, true, TCP_LIMIT);
    let parsed = parse_response(&msg).unwrap();
    assert!(!parsed.tc);
    assert_eq!(parsed.answers, answers);
}

#[test]
fn a_message_of_exactly_max_len_is_not_truncated() {
    let q = query(NAME, TYPE_A, None);
    let answers: Vec<Record> = (0..5).map(|i| a(NAME, i)).collect();
    let len = response(&q, RCODE_NOERROR, &answers, true, TCP_LIMIT).len();
    let exact = parse_response(&response(&q, RCODE_NOERROR, &answers, true, len)).unwrap();
    assert!(!exact.tc);
    assert_eq!(exact.answers.len(), 5);
    let short = parse_response(&response(&q, RCODE_NOERROR, &answers, true, len - 1)).unwrap();
    assert!(short.tc);
    assert!(short.answers.is_empty());
}

#[test]
fn edns_queries_get_an_opt_record_even_when_truncated() {
    let q = query(NAME, TYPE_A, Some(4096));
    let parsed = parse_response(&response(&q, RCODE_NOERROR, &[a(NAME, 1)], true, 4096)).unwrap();
    assert_eq!(parsed.edns, Some(Edns { udp_size: 1232 }));
    assert_eq!(parsed.answers.len(), 1);

    let answers: Vec<Record> = (0..100).map(|i| a(NAME, i)).collect();
    let msg = response(&q, RCODE_NOERROR, &answers, true, 1232);
    let parsed = parse_response(&msg).unwrap();
    assert!(parsed.tc);
    assert_eq!(parsed.edns, Some(Edns { udp_size: 1232 }));
}

#[test]
fn the_rd_bit_is_echoed_and_the_rcode_masked() {
    let mut q = query(NAME, TYPE_A, None);
    q.recursion_desired = false;
    let parsed = parse_response(&response(&q, 0x13, &[], false, 512)).unwrap();
    assert!(!parsed.rd);
    assert!(parsed.ra);
    assert_eq!(parsed.rcode, 3);
}

#[test]
fn answers_with_invalid_names_are_left_out() {
    let q = query(NAME, TYPE_A, None);
    let bad_owner = a("a..b", 1);
    let bad_target = Record {
        name: NAME.into(),
        ttl: 30,
        data: RecordData::Cname("x".repeat(64)),
    };
    let answers = [bad_owner, a(NAME, 2), bad_target];
    let parsed = parse_response(&response(&q, RCODE_NOERROR, &answers, true, 512)).unwrap();
    assert_eq!(parsed.answers, [a(NAME, 2)]);
}

#[test]
fn an_invalid_question_name_gives_servfail() {
    let mut q = query(NAME, TYPE_A, Some(1232));
    q.name = "a..b".into();
    let parsed = parse_response(&response(&q, RCODE_NOERROR, &[a(NAME, 1)], true, 512)).unwrap();
    assert_eq!(parsed.rcode, RCODE_SERVFAIL);
    assert_eq!(parsed.question, None);
    assert!(parsed.answers.is_empty());
    assert_eq!(parsed.edns, Some(Edns { udp_size: 1232 }));
}

#[test]
fn error_responses_echo_what_the_header_allows() {
    assert_eq!(error_response(&[], RCODE_FORMERR), None);
    assert_eq!(error_response(&[0x12], RCODE_FORMERR), None);
    // Only the id: no opcode or RD to keep.
    assert_eq!(
        error_response(&[0x12, 0x34, 0xFF], RCODE_FORMERR),
        Some(vec![0x12, 0x34, 0x80, 0x81, 0, 0, 0, 0, 0, 0, 0, 0])
    );
    // A whole header: opcode 2 and RD kept; AA and TC of the request are not.
    let request = [0xAB, 0xCD, 0x17, 0xFF, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0];
    assert_eq!(
        error_response(&request, RCODE_NOTIMP),
        Some(vec![0xAB, 0xCD, 0x91, 0x84, 0, 0, 0, 0, 0, 0, 0, 0])
    );
    // The rcode takes four bits.
    let reply = error_response(&request, 0xF1).unwrap();
    assert_eq!(reply.get(3), Some(&0x81));
}

#[test]
fn error_responses_read_back() {
    let mut request = encode_query(77, NAME, TYPE_A, None);
    request.push(1);
    let reply = error_response(&request, RCODE_FORMERR).unwrap();
    let parsed = parse_response(&reply).unwrap();
    assert_eq!((parsed.id, parsed.rcode), (77, RCODE_FORMERR));
    assert!(parsed.rd && parsed.ra && !parsed.aa && !parsed.tc);
    assert_eq!(parsed.question, None);
}

#[test]
fn a_query_is_not_a_response() {
    let msg = encode_query(5, NAME, TYPE_A, None);
    assert_eq!(
        parse_response(&msg),
        Err(Error::Malformed {
            id: Some(5),
            reason: "not_a_response"
        })
    );
}

#[test]
fn every_truncation_of_a_response_is_malformed() {
    let q = query("www.example.com", TYPE_A, Some(1232));
    let answers = [
        Record {
            name: "www.example.com".into(),
            ttl: 300,
            data: RecordData::Cname("edge.example.com".into()),
        },
        a("edge.example.com", 7),
    ];
    let msg = response(&q, RCODE_NOERROR, &answers, false, 512);
    assert_eq!(parse_response(&msg).unwrap().answers, answers);
    for len in 0..msg.len() {
        let result = parse_response(msg.get(..len).unwrap());
        assert!(
            matches!(result, Err(Error::Malformed { .. })),
            "length {len}: {result:?}"
        );
    }
    let mut longer = msg.clone();
    longer.push(0);
    assert_eq!(
        parse_response(&longer).map(|_| ()),
        Err(Error::Malformed {
            id: Some(0x4242),
            reason: "trailing_bytes"
        })
    );
}

/// A response header with the given counts, and the question `a.b` type ANY.
fn response_with(counts: [u16; 3], records: &[u8]) -> Vec<u8> {
    let mut msg = vec![0, 1, 0x84, 0x80, 0, 1];
    for count in counts {
        msg.extend_from_slice(&count.to_be_bytes());
    }
    msg.extend_from_slice(b"\x01a\x01b\x00\x00\xFF\x00\x01");
    msg.extend_from_slice(records);
    msg
}

#[test]
fn other_records_are_skipped() {
    // An MX record and an A record of class CH in the answers, an SOA-sized record in
    // the authority section.
    let mut records = b"\xC0\x0C\x00\x0F\x00\x01\x00\x00\x00\x3C\x00\x04\x00\x0A\xC0\x0C".to_vec();
    records.extend_from_slice(b"\xC0\x0C\x00\x01\x00\x03\x00\x00\x00\x3C\x00\x04\x01\x02\x03\x04");
    records.extend_from_slice(b"\xC0\x0C\x00\x01\x00\x01\x00\x00\x00\x3C\x00\x04\x01\x02\x03\x04");
    records.extend_from_slice(b"\x00\x00\x06\x00\x01\x00\x00\x00\x3C\x00\x02\xC0\x0C");
    let parsed = parse_response(&response_with([3, 1, 0], &records)).unwrap();
    assert_eq!(
        parsed.answers,
        [Record {
            name: "a.b".into(),
            ttl: 60,
            data: RecordData::A(Ipv4Addr::new(1, 2, 3, 4)),
        }]
    );
}

#[test]
fn record_data_of_the_wrong_length_is_malformed() {
    let short_a = b"\xC0\x0C\x00\x01\x00\x01\x00\x00\x00\x3C\x00\x03\x01\x02\x03";
    let short_aaaa = b"\xC0\x0C\x00\x1C\x00\x01\x00\x00\x00\x3C\x00\x04\x01\x02\x03\x04";
    // The CNAME's data is 3 bytes but its name (a pointer) takes 2.
    let long_cname = b"\xC0\x0C\x00\x05\x00\x01\x00\x00\x00\x3C\x00\x03\xC0\x0C\x00";
    for (records, reason) in [
        (&short_a[..], "a_length"),
        (short_aaaa, "aaaa_length"),
        (long_cname, "cname_length"),
    ] {
        assert_eq!(
            parse_response(&response_with([1, 0, 0], records)),
            Err(Error::Malformed {
                id: Some(1),
                reason
            })
        );
    }
}
