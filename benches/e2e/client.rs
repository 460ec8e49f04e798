//! The client side of one measured run: submit the workflow, then watch the
//! run until it has finished, as a user of the HTTP API would.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

/// How the client learns that the run has finished.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// Follow `GET /v1/runs/{id}/events` until its final `run` event.
    Events,
    /// `GET /v1/runs/{id}` again this long after each answer until it has ended.
    Poll(Duration),
}

impl Wait {
    /// `events`, `poll` (every 5 ms) or `poll:<ms>`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once(':') {
            None if s == "events" => Ok(Wait::Events),
            None if s == "poll" => Ok(Wait::Poll(Duration::from_millis(5))),
            Some(("poll", ms)) => Ok(Wait::Poll(Duration::from_millis(ms.parse()?))),
            _ => bail!("WEFT_E2E_WAIT={s:?}: expected events, poll or poll:<ms>"),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Wait::Events => "following GET /v1/runs/{id}/events to its end".into(),
            Wait::Poll(every) => {
                format!("polling GET /v1/runs/{{id}} every {} ms", every.as_millis())
            }
        }
    }
}

/// `steps` no-op steps: independent ones and a `join` that needs all of
/// them, or a chain in which each needs the one before it.
pub fn workflow(shape: Shape, steps: usize) -> Value {
    let id = |i: usize| format!("s{i}");
    let mut list: Vec<Value> = (0..steps)
        .map(|i| {
            let mut step = json!({"id": id(i), "component": "noop@1"});
            if shape == Shape::Chain && i > 0 {
                step["needs"] = json!([id(i - 1)]);
            }
            step
        })
        .collect();
    if shape == Shape::FanOut {
        let all: Vec<String> = (0..steps).map(id).collect();
        list.push(json!({"id": "join", "component": "noop@1", "needs": all}));
    }
    json!({"name": shape.name(), "steps": list})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    FanOut,
    Chain,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::FanOut => "fanout",
            Shape::Chain => "chain",
        }
    }
}

/// The tenant `default` of a cluster, over one pool of keep-alive connections.
pub struct Client {
    pub http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    pub fn new(api: &str, key: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            base: format!("http://{api}"),
            key: key.to_string(),
        })
    }

    /// Submits `body` (a serialised `{"workflow", "input"}`) and waits until
    /// the run has finished; returns its id and the time that took.
    pub async fn run(&self, body: Bytes, wait: Wait) -> Result<(String, Duration)> {
        let started = Instant::now();
        let id = self.submit(body).await?;
        match wait {
            Wait::Events => self.follow(&id).await?,
            Wait::Poll(every) => self.poll(&id, every).await?,
        }
        Ok((id, started.elapsed()))
    }

    /// Submits `body` and returns the run's id, without waiting for it.
    pub async fn submit(&self, body: Bytes) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/v1/runs", self.base))
            .bearer_auth(&self.key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        ensure!(status.as_u16() == 202, "submitting: {status} {answer}");
        Ok(answer["id"]
            .as_str()
            .context("no id in the answer")?
            .to_string())
    }

    /// The run as `GET /v1/runs/{id}` gives it.
    #[allow(dead_code)] // used by the fairness benchmark only
    pub async fn get_run(&self, id: &str) -> Result<Value> {
        self.get(id).await
    }

    /// Waits until the run has ended, polling every 20 ms.
    #[allow(dead_code)] // used by the fairness benchmark only
    pub async fn wait_ended(&self, id: &str) -> Result<()> {
        self.poll(id, Duration::from_millis(20)).await
    }

    /// Checks that the run and each of its `steps` steps succeeded; returns
    /// `finished_at - created_at` as the server recorded them.
    pub async fn check(&self, id: &str, steps: usize) -> Result<Duration> {
        let run = self.get(id).await?;
        ensure!(run["status"] == "succeeded", "run {id} did not succeed");
        let succeeded = run["steps"]
            .as_object()
            .context("no steps in the run")?
            .values()
            .filter(|s| s["status"] == "succeeded")
            .count();
        ensure!(
            succeeded == steps,
            "run {id}: {succeeded} of {steps} steps succeeded"
        );
        let time = |field: &str| -> Result<SystemTime> {
            let text = run[field].as_str().context(format!("no {field}"))?;
            Ok(humantime::parse_rfc3339_weak(text)?)
        };
        Ok(time("finished_at")?
            .duration_since(time("created_at")?)
            .unwrap_or_default())
    }

    async fn get(&self, id: &str) -> Result<Value> {
        let response = self
            .http
            .get(format!("{}/v1/runs/{id}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?;
        let status = response.status();
        ensure!(status.is_success(), "GET run {id}: {status}");
        Ok(response.json().await?)
    }

    async fn poll(&self, id: &str, every: Duration) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let run = self.get(id).await?;
            match run["status"].as_str() {
                Some("succeeded" | "failed" | "cancelled") => return Ok(()),
                _ => ensure!(
                    Instant::now() < deadline,
                    "run {id} still going after 600 s"
                ),
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn follow(&self, id: &str) -> Result<()> {
        let response = self
            .http
            .get(format!("{}/v1/runs/{id}/events", self.base))
            .bearer_auth(&self.key)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await?;
        let status = response.status();
        ensure!(status.is_success(), "events of {id}: {status}");
        let mut events = std::pin::pin!(response.bytes_stream().eventsource());
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| anyhow::anyhow!("events of {id}: {e}"))?;
            if event.event != "run" {
                continue;
            }
            let data: Value = serde_json::from_str(&event.data)?;
            if let Some("succeeded" | "failed" | "cancelled") = data["status"].as_str() {
                return Ok(());
            }
        }
        bail!("the event stream of {id} ended before the run")
    }
}

/// `GET /healthz` answered 200, by hand so that no runtime is needed.
pub fn healthy(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).is_ok() && answer.ends_with(b" 200")
}
