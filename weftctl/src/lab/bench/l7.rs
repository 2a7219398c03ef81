//! The waypoint's benchmark: the same HTTP load through the waypoint and through nginx
//! and HAProxy configured as plain reverse proxies, to the same backends, in one run.
//!
//! * Waypoint: `shop/frontend-1` (node-1, in the mesh) → `cart` (10.96.0.10:80, bound
//!   to `shop/cart-waypoint` on node-2) → `cart-1` / `cart-2`: client agent, HBONE,
//!   waypoint, HBONE, destination agent.
//! * nginx, HAProxy: `legacy/billing-1` (node-1, outside the mesh) → the proxy in
//!   `legacy/billing-2` (node-2, outside the mesh) → `cart-1` / `cart-2` in plain HTTP
//!   (through the destination agents' plaintext path, which the pods' PERMISSIVE mode
//!   lets in).
//!
//! Each proxy balances over both backends, keeps upstream connections alive, uses two
//! workers or threads (the waypoint's two runtime threads), and logs every request.
//! Scenarios: HTTP/1.1 POSTs of 1 KiB, closed loop over 16 connections (`wrk`); the
//! same open loop at fixed rates (`weft-sample load`, latency from the scheduled send
//! time); HTTP/2 with prior knowledge, 4 connections × 16 streams (`h2load`). Each
//! figure is min/median/max over the repeats; the proxies' CPU per 1,000 requests,
//! requests per second per core of proxy CPU, and memory are read from `/proc`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;

use super::{
    procs::run_within,
    run::{LabGuard, tune_namespaces},
    store::{Target, format_number, median, ratio},
};
use crate::lab::{PodState, Progress, RUN_DIR, State, in_pod, netns_path};

pub const WAYPOINT_CLIENT: &str = "shop/frontend-1";
pub const PLAIN_CLIENT: &str = "legacy/billing-1";
pub const PROXY_POD: &str = "legacy/billing-2";
pub const WAYPOINT_POD: &str = "shop/cart-waypoint";
pub const BACKENDS: [&str; 2] = ["shop/cart-1", "shop/cart-2"];
/// The cart Service's address, bound to the waypoint.
const CART: &str = "10.96.0.10:80";
const NGINX_H1: u16 = 8081;
const HAPROXY_H1: u16 = 8082;
const NGINX_H2: u16 = 8083;
const HAPROXY_H2: u16 = 8084;
const BODY_BYTES: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proxy {
    Waypoint,
    Nginx,
    Haproxy,
}

impl Proxy {
    pub const ALL: [Proxy; 3] = [Proxy::Waypoint, Proxy::Nginx, Proxy::Haproxy];

    pub fn name(self) -> &'static str {
        match self {
            Proxy::Waypoint => "waypoint",
            Proxy::Nginx => "nginx",
            Proxy::Haproxy => "haproxy",
        }
    }
}

/// How long and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub repeats: u32,
    pub secs: u32,
    /// Open-loop rates, requests per second.
    pub rates: Vec<u32>,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                repeats: 1,
                secs: 3,
                rates: vec![500],
            }
        } else {
            Plan {
                repeats: 3,
                secs: 10,
                rates: vec![500, 2000],
            }
        }
    }
}

/// The samples of one figure of one proxy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub scenario: String,
    pub proxy: Proxy,
    pub metric: String,
    pub unit: String,
    pub samples: Vec<f64>,
}

/// What the waypoint's benchmark reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Results {
    pub series: Vec<Series>,
    /// The goal: per core at least nginx's requests/s, p99 at most nginx's.
    pub goals: Vec<Target>,
}

impl Results {
    fn push(&mut self, scenario: &str, proxy: Proxy, metric: &str, unit: &str, value: f64) {
        match self
            .series
            .iter_mut()
            .find(|s| s.scenario == scenario && s.proxy == proxy && s.metric == metric)
        {
            Some(s) => s.samples.push(value),
            None => self.series.push(Series {
                scenario: scenario.to_owned(),
                proxy,
                metric: metric.to_owned(),
                unit: unit.to_owned(),
                samples: vec![value],
            }),
        }
    }

    pub fn median(&self, scenario: &str, proxy: Proxy, metric: &str) -> Option<f64> {
        let s = self
            .series
            .iter()
            .find(|s| s.scenario == scenario && s.proxy == proxy && s.metric == metric)?;
        median(&s.samples)
    }

    fn set_goals(&mut self) {
        let ratio = |metric: &str| {
            ratio(
                self.median(CLOSED, Proxy::Waypoint, metric),
                self.median(CLOSED, Proxy::Nginx, metric),
            )
        };
        self.goals = vec![
            Target::at_least(
                "waypoint / nginx requests/s per core (HTTP/1.1, closed loop)".to_owned(),
                ratio(PER_CORE),
                1.0,
            ),
            Target::at_most(
                "waypoint / nginx p99 (HTTP/1.1, closed loop)".to_owned(),
                ratio("p99"),
                1.0,
            ),
        ];
    }
}

const CLOSED: &str = "http1 closed loop, 16 connections";
const H2: &str = "h2, 4 connections × 16 streams";
const RPS: &str = "requests/s";
const PER_CORE: &str = "requests/s per proxy core";
const CPU_1K: &str = "proxy CPU per 1,000 requests";
const RSS: &str = "proxy memory";

fn open_scenario(rate: u32) -> String {
    format!("http1 open loop, {rate} requests/s")
}

struct Bench<'a> {
    plan: &'a Plan,
    progress: &'a Progress,
    sample: &'a Path,
    state: &'a State,
    results: &'a mut Results,
}

impl Bench<'_> {
    fn pod(&self, key: &str) -> anyhow::Result<&PodState> {
        self.state.pod(key)
    }

    /// Where `proxy` runs (its cgroup and process name), its client and its address.
    fn setup(
        &self,
        proxy: Proxy,
        h2: bool,
    ) -> anyhow::Result<(&PodState, &'static str, &PodState, String)> {
        Ok(match proxy {
            Proxy::Waypoint => (
                self.pod(WAYPOINT_POD)?,
                "weft-waypoint",
                self.pod(WAYPOINT_CLIENT)?,
                CART.to_owned(),
            ),
            Proxy::Nginx | Proxy::Haproxy => {
                let port = match (proxy, h2) {
                    (Proxy::Nginx, false) => NGINX_H1,
                    (Proxy::Nginx, true) => NGINX_H2,
                    (_, false) => HAPROXY_H1,
                    (_, true) => HAPROXY_H2,
                };
                let at = self.pod(PROXY_POD)?;
                (
                    at,
                    proxy.name(),
                    self.pod(PLAIN_CLIENT)?,
                    format!("{}:{port}", at.ip),
                )
            }
        })
    }

    /// Runs `program args` in `client` while measuring `proxy`; records its CPU per
    /// 1,000 requests, requests/s per core and memory under `scenario`.
    fn measured(
        &mut self,
        scenario: &str,
        proxy: Proxy,
        h2: bool,
        command: impl FnOnce(&str) -> (PathBuf, Vec<String>),
    ) -> anyhow::Result<(String, f64)> {
        let (at, comm, client, addr) = self.setup(proxy, h2)?;
        let (program, args) = command(&addr);
        let (cpu0, _) = usage(&at.cgroup, comm)?;
        let limit = Duration::from_secs(u64::from(self.plan.secs) + 60);
        let out = run_within(
            &mut in_pod(&client.cgroup, &netns_path(&client.netns), &program, &args),
            limit,
            &format!("{} in {}", program.display(), client.pod.key()),
        )?;
        let (cpu1, rss) = usage(&at.cgroup, comm)?;
        self.results
            .push(scenario, proxy, RSS, "MiB", rss as f64 / 1024.0);
        Ok((out, cpu1 - cpu0))
    }

    fn costs(&mut self, scenario: &str, proxy: Proxy, requests: f64, cpu: f64) {
        if requests > 0.0 && cpu > 0.0 {
            self.results
                .push(scenario, proxy, CPU_1K, "ms", cpu / requests * 1e6);
            let secs = f64::from(self.plan.secs);
            self.results.push(
                scenario,
                proxy,
                PER_CORE,
                "requests/s",
                requests / secs / (cpu / secs),
            );
        }
    }

    fn closed_loop(&mut self, proxy: Proxy, repeat: u32) -> anyhow::Result<()> {
        let lua = Path::new(RUN_DIR).join("bench/post.lua");
        let secs = self.plan.secs;
        let (out, cpu) = self.measured(CLOSED, proxy, false, |addr| {
            (
                PathBuf::from("/usr/bin/wrk"),
                [
                    "-t2",
                    "-c16",
                    &format!("-d{secs}s"),
                    "--latency",
                    "-s",
                    &lua.display().to_string(),
                    &format!("http://{addr}/"),
                ]
                .map(str::to_owned)
                .to_vec(),
            )
        })?;
        let w = parse_wrk(&out).with_context(|| format!("reading wrk's output: {out}"))?;
        if w.failures > w.requests * 0.01 {
            bail!(
                "{}: {} of {} requests failed: {out}",
                proxy.name(),
                w.failures,
                w.requests
            );
        }
        let r = &mut *self.results;
        r.push(CLOSED, proxy, RPS, "requests/s", w.rps);
        r.push(CLOSED, proxy, "p50", "ms", w.p50_ms);
        r.push(CLOSED, proxy, "p99", "ms", w.p99_ms);
        self.costs(CLOSED, proxy, w.requests, cpu);
        self.say(
            CLOSED,
            proxy,
            repeat,
            format_args!(
                "{} requests/s, p50 {} ms, p99 {} ms, {:.2} s of proxy CPU",
                format_number(w.rps),
                format_number(w.p50_ms),
                format_number(w.p99_ms),
                cpu
            ),
        );
        Ok(())
    }

    fn open_loop(&mut self, proxy: Proxy, rate: u32, repeat: u32) -> anyhow::Result<()> {
        let scenario = open_scenario(rate);
        let sample = self.sample.to_owned();
        let secs = self.plan.secs;
        let (out, cpu) = self.measured(&scenario, proxy, false, |addr| {
            (
                sample,
                [
                    "load",
                    "--connect",
                    addr,
                    "--rate",
                    &rate.to_string(),
                    "--duration-secs",
                    &secs.to_string(),
                    "--connections",
                    "16",
                    "--body-bytes",
                    &BODY_BYTES.to_string(),
                ]
                .map(str::to_owned)
                .to_vec(),
            )
        })?;
        let v: Value = serde_json::from_str(out.trim())
            .with_context(|| format!("reading weft-sample load's output: {out}"))?;
        let num = |f: &str| v[f].as_f64().with_context(|| format!("no {f} in {v}"));
        let (requests, errors) = (num("requests")?, num("errors")?);
        if errors > requests * 0.01 {
            bail!(
                "{}: {errors} of {requests} requests failed: {v}",
                proxy.name()
            );
        }
        let r = &mut *self.results;
        r.push(&scenario, proxy, RPS, "requests/s", num("achieved_rps")?);
        for (metric, field) in [("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")] {
            r.push(&scenario, proxy, metric, "ms", num(field)? / 1000.0);
        }
        self.costs(&scenario, proxy, requests, cpu);
        self.say(
            &scenario,
            proxy,
            repeat,
            format_args!(
                "{} requests/s, p99 {} ms",
                format_number(num("achieved_rps")?),
                format_number(num("p99_us")? / 1000.0)
            ),
        );
        Ok(())
    }

    fn h2(&mut self, proxy: Proxy, repeat: u32) -> anyhow::Result<()> {
        let secs = self.plan.secs;
        let (out, cpu) = self.measured(H2, proxy, true, |addr| {
            (
                PathBuf::from("/usr/bin/h2load"),
                [
                    "-c4",
                    "-m16",
                    "-D",
                    &secs.to_string(),
                    &format!("http://{addr}/"),
                ]
                .map(str::to_owned)
                .to_vec(),
            )
        })?;
        let h = parse_h2load(&out).with_context(|| format!("reading h2load's output: {out}"))?;
        if h.failed > h.succeeded * 0.01 {
            bail!(
                "{}: {} requests failed over HTTP/2: {out}",
                proxy.name(),
                h.failed
            );
        }
        let r = &mut *self.results;
        r.push(H2, proxy, RPS, "requests/s", h.rps);
        r.push(H2, proxy, "mean", "ms", h.mean_ms);
        r.push(H2, proxy, "max", "ms", h.max_ms);
        self.costs(H2, proxy, h.succeeded, cpu);
        self.say(
            H2,
            proxy,
            repeat,
            format_args!(
                "{} requests/s, mean {} ms",
                format_number(h.rps),
                format_number(h.mean_ms)
            ),
        );
        Ok(())
    }

    fn say(&self, scenario: &str, proxy: Proxy, repeat: u32, what: impl std::fmt::Display) {
        self.progress.say(format_args!(
            "{scenario} {} {repeat}/{}: {what}",
            proxy.name(),
            self.plan.repeats
        ));
    }
}

/// Brings up the lab, runs the waypoint's scenarios against nginx and HAProxy, and
/// takes it down.
pub(super) fn run(plan: &Plan, sample: &Path, progress: &Progress) -> anyhow::Result<Results> {
    progress.say("bringing the lab up for the waypoint against nginx and HAProxy");
    let lab = LabGuard::up(&[], progress)?;
    tune_namespaces(&lab.state)?;
    let mut results = Results::default();
    let outcome = (|| {
        let _proxies = start_proxies(&lab.state, progress)?;
        let mut bench = Bench {
            plan,
            progress,
            sample,
            state: &lab.state,
            results: &mut results,
        };
        for repeat in 1..=plan.repeats {
            for proxy in Proxy::ALL {
                bench.closed_loop(proxy, repeat)?;
            }
            for &rate in &plan.rates {
                for proxy in Proxy::ALL {
                    bench.open_loop(proxy, rate, repeat)?;
                }
            }
            for proxy in Proxy::ALL {
                bench.h2(proxy, repeat)?;
            }
        }
        anyhow::Ok(())
    })();
    results.set_goals();
    outcome?;
    lab.down()?;
    Ok(results)
}

mod load;
mod proxies;
mod report;

pub use load::{H2load, Wrk, parse_h2load, parse_wrk, wrk_duration_ms};
pub use proxies::{haproxy_conf, nginx_conf};
pub use report::markdown;

use proxies::{start_proxies, usage};

#[cfg(test)]
mod tests;
