use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::dns::wire::TYPE_CNAME;

const CART: &str = "cart.shop.svc.cluster.local";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10);
const API: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const WILD: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);

fn table() -> Table {
    Table::new(
        "cluster.local",
        [
            (CART.to_owned(), vec![IpAddr::V4(VIP)]),
            (
                "Dual.Shop.svc.cluster.local.".to_owned(),
                vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, 11)), IpAddr::V6(VIP6)],
            ),
            (
                "v6.billing.svc.cluster.local".to_owned(),
                vec![IpAddr::V6(VIP6)],
            ),
            ("api.example.com".to_owned(), vec![IpAddr::V4(API)]),
            ("*.example.com".to_owned(), vec![IpAddr::V4(WILD)]),
        ],
    )
}

fn a(name: &str, addr: Ipv4Addr) -> Record {
    Record {
        name: name.into(),
        ttl: TTL,
        data: RecordData::A(addr),
    }
}

fn aaaa(name: &str, addr: Ipv6Addr) -> Record {
    Record {
        name: name.into(),
        ttl: TTL,
        data: RecordData::Aaaa(addr),
    }
}

fn answer(name: &str, records: Vec<Record>) -> Lookup {
    Lookup::Answer {
        name: name.into(),
        records,
    }
}

#[test]
fn a_service_answers_with_its_vip() {
    assert_eq!(
        table().lookup(CART, TYPE_A, "shop"),
        answer(CART, vec![a(CART, VIP)])
    );
    // From any namespace.
    assert_eq!(
        table().lookup(CART, TYPE_A, "other"),
        answer(CART, vec![a(CART, VIP)])
    );
}

#[test]
fn names_match_without_regard_to_case() {
    let t = table();
    assert_eq!(
        t.lookup("CART.Shop.SVC.cluster.LOCAL", TYPE_A, "shop"),
        answer(CART, vec![a(CART, VIP)])
    );
    // The table's own names were lower-cased and lost their trailing dot.
    let dual = "dual.shop.svc.cluster.local";
    assert!(matches!(
        t.lookup(dual, TYPE_A, "shop"),
        Lookup::Answer { records, .. } if records.len() == 1
    ));
    assert_eq!(
        t.lookup("API.EXAMPLE.COM.", TYPE_A, ""),
        answer("api.example.com", vec![a("api.example.com", API)])
    );
}

#[test]
fn aaaa_of_a_v4_only_service_is_nodata() {
    assert_eq!(
        table().lookup(CART, TYPE_AAAA, "shop"),
        answer(CART, vec![])
    );
    assert_eq!(
        table().lookup("v6.billing.svc.cluster.local", TYPE_A, "shop"),
        answer("v6.billing.svc.cluster.local", vec![])
    );
}

#[test]
fn other_types_of_a_held_name_are_nodata() {
    assert_eq!(
        table().lookup(CART, TYPE_CNAME, "shop"),
        answer(CART, vec![])
    );
    assert_eq!(table().lookup(CART, 33, "shop"), answer(CART, vec![]));
}

#[test]
fn any_gets_both_families() {
    let dual = "dual.shop.svc.cluster.local";
    assert_eq!(
        table().lookup(dual, TYPE_ANY, "shop"),
        answer(
            dual,
            vec![a(dual, Ipv4Addr::new(10, 96, 0, 11)), aaaa(dual, VIP6)]
        )
    );
    assert_eq!(
        table().lookup(dual, TYPE_AAAA, "shop"),
        answer(dual, vec![aaaa(dual, VIP6)])
    );
}

#[test]
fn a_bare_name_is_a_service_of_the_pods_namespace() {
    let t = table();
    assert_eq!(
        t.lookup("cart", TYPE_A, "shop"),
        answer("cart", vec![a("cart", VIP)])
    );
    assert_eq!(
        t.lookup("Cart", TYPE_A, "SHOP"),
        answer("cart", vec![a("cart", VIP)])
    );
    // Not a service of this namespace: maybe a host name the upstream knows.
    assert_eq!(t.lookup("cart", TYPE_A, "billing"), Lookup::Forward);
    assert_eq!(t.lookup("cart", TYPE_A, ""), Lookup::Forward);
    assert_eq!(t.lookup("printer", TYPE_A, "shop"), Lookup::Forward);
}

#[test]
fn a_name_with_one_dot_is_service_and_namespace() {
    let t = table();
    assert_eq!(
        t.lookup("cart.shop", TYPE_A, "billing"),
        answer("cart.shop", vec![a("cart.shop", VIP)])
    );
    assert_eq!(
        t.lookup("v6.billing", TYPE_A, "shop"),
        answer("v6.billing", vec![])
    );
    assert_eq!(t.lookup("cart.billing", TYPE_A, "shop"), Lookup::Forward);
    assert_eq!(t.lookup("example.com", TYPE_A, "shop"), Lookup::Forward);
}

#[test]
fn longer_partial_names_are_not_expanded() {
    assert_eq!(
        table().lookup("cart.shop.svc", TYPE_A, "shop"),
        Lookup::Forward
    );
}

#[test]
fn unknown_names_in_the_cluster_domain_do_not_exist() {
    let t = table();
    for name in [
        "nope.shop.svc.cluster.local",
        "cart.billing.svc.cluster.local",
        "x.cart.shop.svc.cluster.local",
        "pod.cluster.local",
        "10-0-0-1.shop.pod.cluster.local",
    ] {
        assert_eq!(t.lookup(name, TYPE_A, "shop"), Lookup::NxDomain, "{name}");
    }
}

#[test]
fn search_list_expansions_do_not_exist() {
    let t = table();
    for name in [
        "cart.shop.svc.cluster.local.shop.svc.cluster.local",
        "cart.shop.svc.cluster.local.svc.cluster.local",
        "cart.shop.svc.cluster.local.cluster.local",
        "api.example.com.shop.svc.cluster.local",
        "api.example.com.svc.cluster.local",
        "api.example.com.cluster.local",
        "www.google.com.shop.svc.cluster.local",
        "cart.shop.shop.svc.cluster.local",
    ] {
        assert_eq!(t.lookup(name, TYPE_A, "shop"), Lookup::NxDomain, "{name}");
        assert_eq!(
            t.lookup(name, TYPE_AAAA, "shop"),
            Lookup::NxDomain,
            "{name}"
        );
    }
}

#[test]
fn the_domains_above_services_exist_without_addresses() {
    let t = table();
    for name in [
        "shop.svc.cluster.local",
        "billing.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ] {
        assert_eq!(
            t.lookup(name, TYPE_A, "shop"),
            answer(name, vec![]),
            "{name}"
        );
    }
    // A namespace without services is not known.
    assert_eq!(
        t.lookup("empty.svc.cluster.local", TYPE_A, "shop"),
        Lookup::NxDomain
    );
    // Above the cluster domain the table is not authoritative.
    assert_eq!(t.lookup("local", TYPE_A, "shop"), Lookup::Forward);
}

#[test]
fn names_outside_the_cluster_domain_are_forwarded() {
    let t = table();
    for name in [
        "www.google.com",
        "example.com",
        "example.org",
        "cluster.local.example.org",
        "notcluster.local",
        "",
    ] {
        assert_eq!(t.lookup(name, TYPE_A, "shop"), Lookup::Forward, "{name:?}");
    }
}

#[test]
fn external_hosts_answer_with_their_addresses() {
    assert_eq!(
        table().lookup("api.example.com", TYPE_A, "shop"),
        answer("api.example.com", vec![a("api.example.com", API)])
    );
    assert_eq!(
        table().lookup("api.example.com", TYPE_AAAA, "shop"),
        answer("api.example.com", vec![])
    );
}

#[test]
fn wildcards_match_one_or_more_labels() {
    let t = table();
    for name in ["www.example.com", "a.b.example.com", "x.api.example.com"] {
        assert_eq!(
            t.lookup(name, TYPE_A, "shop"),
            answer(name, vec![a(name, WILD)]),
            "{name}"
        );
    }
    // Not the suffix itself.
    assert_eq!(t.lookup("example.com", TYPE_A, "shop"), Lookup::Forward);
}

#[test]
fn exact_names_win_over_wildcards() {
    assert_eq!(
        table().lookup("api.example.com", TYPE_A, "shop"),
        answer("api.example.com", vec![a("api.example.com", API)])
    );
}

#[test]
fn the_most_specific_wildcard_wins() {
    let one = Ipv4Addr::new(192, 0, 2, 1);
    let two = Ipv4Addr::new(192, 0, 2, 2);
    let t = Table::new(
        "cluster.local",
        [
            ("*.example.com".to_owned(), vec![IpAddr::V4(one)]),
            ("*.eu.example.com".to_owned(), vec![IpAddr::V4(two)]),
        ],
    );
    let lookup = |name: &str| t.lookup(name, TYPE_A, "shop");
    assert_eq!(
        lookup("a.eu.example.com"),
        answer("a.eu.example.com", vec![a("a.eu.example.com", two)])
    );
    assert_eq!(
        lookup("eu.example.com"),
        answer("eu.example.com", vec![a("eu.example.com", one)])
    );
    assert_eq!(
        lookup("a.us.example.com"),
        answer("a.us.example.com", vec![a("a.us.example.com", one)])
    );
}

#[test]
fn wildcards_in_the_cluster_domain_answer_and_count_as_ancestors() {
    let t = Table::new(
        "cluster.local",
        [(
            "*.db.shop.svc.cluster.local".to_owned(),
            vec![IpAddr::V4(VIP)],
        )],
    );
    let name = "pg-0.db.shop.svc.cluster.local";
    assert_eq!(
        t.lookup(name, TYPE_A, "shop"),
        answer(name, vec![a(name, VIP)])
    );
    let parent = "db.shop.svc.cluster.local";
    assert_eq!(t.lookup(parent, TYPE_A, "shop"), answer(parent, vec![]));
    // x.db expands to x.db.svc.cluster.local, which nothing matches.
    assert_eq!(t.lookup("x.db", TYPE_A, "shop"), Lookup::Forward);
}

#[test]
fn a_short_name_reaches_a_wildcard_through_its_expansion() {
    let t = Table::new(
        "cluster.local",
        [("*.shop.svc.cluster.local".to_owned(), vec![IpAddr::V4(VIP)])],
    );
    assert_eq!(
        t.lookup("anything", TYPE_A, "shop"),
        answer("anything", vec![a("anything", VIP)])
    );
    assert_eq!(t.lookup("anything", TYPE_A, "billing"), Lookup::Forward);
}

#[test]
fn a_name_given_twice_has_every_address_once() {
    let other = Ipv4Addr::new(10, 96, 0, 20);
    let t = Table::new(
        "cluster.local",
        [
            (CART.to_owned(), vec![IpAddr::V4(VIP)]),
            (
                CART.to_uppercase(),
                vec![IpAddr::V4(other), IpAddr::V4(VIP)],
            ),
        ],
    );
    assert_eq!(
        t.lookup(CART, TYPE_A, "shop"),
        answer(CART, vec![a(CART, VIP), a(CART, other)])
    );
}

#[test]
fn the_cluster_domain_is_normalized() {
    let t = Table::new("Cluster.Local.", [(CART.to_owned(), vec![IpAddr::V4(VIP)])]);
    assert_eq!(
        t.lookup("cart", TYPE_A, "shop"),
        answer("cart", vec![a("cart", VIP)])
    );
    assert_eq!(
        t.lookup("nope.cluster.local", TYPE_A, "shop"),
        Lookup::NxDomain
    );
}

#[test]
fn another_cluster_domain_is_not_ours() {
    let t = Table::new(
        "corp.internal",
        [(
            "cart.shop.svc.corp.internal".to_owned(),
            vec![IpAddr::V4(VIP)],
        )],
    );
    assert_eq!(
        t.lookup("nope.svc.cluster.local", TYPE_A, "shop"),
        Lookup::Forward
    );
    assert_eq!(
        t.lookup("nope.svc.corp.internal", TYPE_A, "shop"),
        Lookup::NxDomain
    );
    assert_eq!(
        t.lookup("cart.shop", TYPE_A, "x"),
        answer("cart.shop", vec![a("cart.shop", VIP)])
    );
}

#[test]
fn an_empty_cluster_domain_is_authoritative_for_nothing() {
    let t = Table::new("", [("api.example.com".to_owned(), vec![IpAddr::V4(API)])]);
    assert_eq!(
        t.lookup("nope.svc.cluster.local", TYPE_A, "shop"),
        Lookup::Forward
    );
    assert_eq!(t.lookup("api", TYPE_A, "shop"), Lookup::Forward);
    assert_eq!(
        t.lookup("api.example.com", TYPE_A, "shop"),
        answer("api.example.com", vec![a("api.example.com", API)])
    );
}

#[test]
fn escaped_dots_do_not_split_labels() {
    let t = table();
    // The labels "svc.cluster" and "cluster.local": not in the cluster domain.
    assert_eq!(
        t.lookup("x.svc\\.cluster.local", TYPE_A, "shop"),
        Lookup::Forward
    );
    assert_eq!(
        t.lookup("x.svc.cluster\\.local", TYPE_A, "shop"),
        Lookup::Forward
    );
    // The label "a.b" under "svc.cluster.local": in it.
    assert_eq!(
        t.lookup("a\\.b.svc.cluster.local", TYPE_A, "shop"),
        Lookup::NxDomain
    );
    // One label, so it is expanded as a bare name.
    assert_eq!(t.lookup("cart\\.x", TYPE_A, "shop"), Lookup::Forward);
    assert_eq!(normalize("a\\."), "a\\.");
    assert_eq!(normalize("A.b."), "a.b");
    assert_eq!(normalize("."), "");
}

#[test]
fn lookups_agree_with_the_names_the_parser_produces() {
    use crate::dns::wire::{encode_query, parse_query};
    let t = table();
    let query = parse_query(&encode_query(
        1,
        "CART.shop.svc.cluster.local",
        TYPE_A,
        None,
    ))
    .unwrap();
    assert_eq!(
        t.lookup(&query.name, query.qtype, "shop"),
        answer(CART, vec![a(CART, VIP)])
    );
}
