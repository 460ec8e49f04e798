//! The load: connections that send one request back to back, and what a
//! measured window of them gives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};

use crate::machine::{machine_cpu, own_cpu};
use crate::server::{Api, Server, connect};
use crate::{RUNS, Settings, WARM_UP, report};

/// The parts of a request, built once and copied for every request.
pub struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Template {
    pub fn new(api: &Api, method: Method, path: &str, body: Option<Bytes>) -> Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(&api.addr.to_string())?);
        let bearer = format!("Bearer {}", api.key);
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&bearer)?);
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(Self {
            method,
            uri: path.parse()?,
            headers,
            body: body.unwrap_or_default(),
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// One scenario: the same request over and over.
pub struct Load {
    pub label: &'static str,
    /// Answers per second to reach.
    pub target: f64,
    /// The status that counts as an answer; any other is reported apart.
    pub expected: StatusCode,
    pub template: Arc<Template>,
}

/// What one measured window gave.
pub struct Measurement {
    /// Answers with the expected status in the window.
    pub answers: usize,
    pub window: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// Answers with another status, by status.
    pub unexpected: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection errors).
    pub failed: u64,
    /// CPU time spent in the window by the server, by this process, and by
    /// everything else on the machine.
    pub server_cpu: Duration,
    pub client_cpu: Duration,
    pub other_cpu: Duration,
    /// After `POST /v1/runs`: how long the submitted runs took to finish.
    pub drain: Option<Duration>,
}

/// A scenario and its measurements.
pub struct Report {
    pub load: Load,
    pub runs: Vec<Measurement>,
}

impl Load {
    /// Measures `RUNS` times, printing each measurement as it ends.
    pub fn repeat(
        self,
        rt: &tokio::runtime::Runtime,
        server: &Server,
        settings: &Settings,
        api: &Api,
    ) -> Result<Report> {
        let mut runs = Vec::new();
        for run in 1..=RUNS {
            let mut m = rt.block_on(self.measure(server, settings))?;
            if self.expected == StatusCode::ACCEPTED {
                m.drain = Some(rt.block_on(api.drain())?);
            }
            report::Row::of(&m).print(self.label, &run.to_string(), self.target);
            runs.push(m);
        }
        Ok(Report { load: self, runs })
    }

    async fn measure(&self, server: &Server, settings: &Settings) -> Result<Measurement> {
        let mut senders = Vec::with_capacity(settings.connections);
        for _ in 0..settings.connections {
            senders.push(connect(server.addr).await?);
        }
        let window_start = Instant::now() + WARM_UP;
        let window_end = window_start + settings.measured;
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|sender| {
                let (template, addr) = (self.template.clone(), server.addr);
                let window = (window_start, window_end);
                tokio::spawn(drive(sender, addr, template, self.expected, window))
            })
            .collect();

        tokio::time::sleep_until(window_start.into()).await;
        let cpu = || (server.cpu(), own_cpu(), machine_cpu());
        let before = cpu();
        tokio::time::sleep_until(window_end.into()).await;
        let after = cpu();
        let server_cpu = after.0.saturating_sub(before.0);
        let client_cpu = after.1.saturating_sub(before.1);
        let other_cpu = after
            .2
            .saturating_sub(before.2)
            .saturating_sub(server_cpu + client_cpu);

        let mut latencies = Vec::new();
        let mut unexpected = BTreeMap::new();
        let mut failed = 0;
        for task in tasks {
            let stats = task.await?;
            latencies.extend_from_slice(&stats.latencies_us);
            for (status, n) in stats.unexpected {
                *unexpected.entry(status).or_insert(0) += n;
            }
            failed += stats.failed;
        }
        ensure!(!latencies.is_empty(), "{}: no expected answer", self.label);
        latencies.sort_unstable();
        Ok(Measurement {
            answers: latencies.len(),
            window: settings.measured,
            p50: percentile(&latencies, 50.0),
            p99: percentile(&latencies, 99.0),
            unexpected,
            failed,
            server_cpu,
            client_cpu,
            other_cpu,
            drain: None,
        })
    }
}

/// What one connection saw in the window.
#[derive(Default)]
struct ConnectionStats {
    latencies_us: Vec<u32>,
    unexpected: BTreeMap<u16, u64>,
    failed: u64,
}

/// Sends requests back to back on one connection until the window ends, and
/// keeps the latencies of the answers that arrive inside it.
async fn drive(
    mut sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    template: Arc<Template>,
    expected: StatusCode,
    (window_start, window_end): (Instant, Instant),
) -> ConnectionStats {
    let mut stats = ConnectionStats {
        latencies_us: Vec::with_capacity(1 << 12),
        ..ConnectionStats::default()
    };
    loop {
        let sent = Instant::now();
        if sent >= window_end {
            return stats;
        }
        let answer = async {
            sender.ready().await?;
            let response = sender.send_request(template.request()).await?;
            let status = response.status();
            // Read the body to its end, so that the connection can be reused.
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<_, hyper::Error>(status)
        }
        .await;
        let done = Instant::now();
        let counted = done >= window_start && done < window_end;
        match answer {
            Ok(status) if status == expected => {
                if counted {
                    let us = done.duration_since(sent).as_micros();
                    stats
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            Ok(status) => {
                if counted {
                    *stats.unexpected.entry(status.as_u16()).or_insert(0) += 1;
                }
            }
            Err(_) => {
                if counted {
                    stats.failed += 1;
                }
                // The connection is most likely gone: open another.
                match connect(addr).await {
                    Ok(new) => sender = new,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
}

/// Nearest-rank percentile of sorted microseconds.
fn percentile(sorted_us: &[u32], p: f64) -> Duration {
    let rank = (p / 100.0 * sorted_us.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_us.len()) - 1;
    Duration::from_micros(u64::from(sorted_us[i]))
}
