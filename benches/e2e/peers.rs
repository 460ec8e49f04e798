//! The peers' own benchmarks (`<peers>/<name>/bench.sh N_FANOUT N_CHAIN`),
//! run as they are and read from the JSON lines they print.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::Figures;
use crate::client::Shape;

/// What one peer's benchmark reported.
pub struct Peer {
    pub name: &'static str,
    pub fanout: Figures,
    pub chain: Figures,
    /// The state of the machine when it ran.
    pub machine: String,
}

/// Runs `<dir>/<name>/bench.sh`; its stderr passes through, prefixed.
pub fn run(dir: &Path, name: &'static str, fanout: usize, chain: usize) -> Result<Peer> {
    let script = dir.join(name).join("bench.sh");
    ensure!(script.exists(), "{} not found", script.display());
    eprintln!("\n[{name}] {} {fanout} {chain}", script.display());
    let started = Instant::now();
    let mut child = Command::new(&script)
        .args([fanout.to_string(), chain.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", script.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let echo = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{name}] {line}");
            lines.push(line);
        }
        lines
    });
    let mut out = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        eprintln!("[{name}] {line}");
        out.push(line);
    }
    let status = child.wait()?;
    let err = echo.join().unwrap_or_default();
    ensure!(
        status.success(),
        "{} exited with {status}",
        script.display()
    );
    eprintln!("[{name}] done in {:.0} s", started.elapsed().as_secs_f64());

    let lines: Vec<Value> = out
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let figures = |shape: Shape| -> Result<Figures> {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|v| v["scenario"] == shape.name())
            .collect();
        let first = mine
            .first()
            .with_context(|| format!("{name} printed no {} line", shape.name()))?;
        let steps = first["steps"].as_u64().context("no steps")? as usize;
        let printed: Vec<f64> = mine.iter().filter_map(|v| v["seconds"].as_f64()).collect();
        // Restate prints only the median on stdout, each run on stderr.
        let runs = if printed.len() > 1 {
            printed
        } else {
            let runs = restate_runs(&err, shape, steps);
            if runs.is_empty() { printed } else { runs }
        };
        Ok(Figures::new(steps, runs, printed_median(&mine)))
    };
    Ok(Peer {
        name,
        fanout: figures(Shape::FanOut)?,
        chain: figures(Shape::Chain)?,
        machine: String::new(),
    })
}

/// The median a peer printed itself, when it printed one line for all runs.
fn printed_median(lines: &[&Value]) -> Option<f64> {
    match lines {
        [only] => only["seconds"].as_f64(),
        _ => None,
    }
}

/// `[client] fanout(invocations) N=5000 run 1/3: {"seconds":...}` lines.
fn restate_runs(stderr: &[String], shape: Shape, steps: usize) -> Vec<f64> {
    stderr
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("[client] ")?;
            let (head, json) = rest.split_once(": {")?;
            if !head.starts_with(shape.name()) || !head.contains(&format!(" N={steps} ")) {
                return None;
            }
            let v: Value = serde_json::from_str(&format!("{{{json}")).ok()?;
            v["seconds"].as_f64()
        })
        .collect()
}
