//! The tables printed at the end, in Markdown so that they can be pasted.

use crate::client::Shape;
use crate::peers::Peer;
use crate::{Figures, Weft, secs};

/// fan-out: at least this many steps/s; chain: at most this many ms per step.
const FANOUT_TARGET: f64 = 10_000.0;
const CHAIN_TARGET: f64 = 0.5;

fn rate(shape: Shape, figures: &Figures, seconds: f64) -> String {
    match shape {
        Shape::FanOut => format!("{:.0}", figures.steps_per_s(seconds)),
        Shape::Chain => format!("{:.3}", figures.ms_per_step(seconds)),
    }
}

fn unit(shape: Shape) -> &'static str {
    match shape {
        Shape::FanOut => "steps/s",
        Shape::Chain => "ms/step",
    }
}

fn label(topology: crate::cluster::Topology) -> &'static str {
    match topology {
        crate::cluster::Topology::OneNode => "Weft, 1 node",
        crate::cluster::Topology::TwoWorkers => "Weft, api + 2 workers",
    }
}

/// Each measured run and the median, per system and scenario.
pub fn runs(wefts: &[Weft], peers: &[Peer]) {
    println!("| system | scenario | steps | runs | median | unit |");
    println!("|---|---|---|---|---|---|");
    let row = |system: &str, shape: Shape, figures: &Figures| {
        let runs: Vec<String> = figures
            .runs
            .iter()
            .map(|s| rate(shape, figures, *s))
            .collect();
        println!(
            "| {system} | {} | {} | {} | **{}** | {} |",
            shape.name(),
            figures.steps,
            runs.join(", "),
            rate(shape, figures, figures.median),
            unit(shape)
        );
    };
    for weft in wefts {
        row(label(weft.topology), Shape::FanOut, &weft.fanout);
        row(label(weft.topology), Shape::Chain, &weft.chain);
    }
    for peer in peers {
        row(peer.name, Shape::FanOut, &peer.fanout);
        row(peer.name, Shape::Chain, &peer.chain);
    }
    println!();
    for weft in wefts {
        println!("- {}: {}", label(weft.topology), weft.machine);
    }
    for peer in peers {
        println!("- {}: {}", peer.name, peer.machine);
    }
}

/// CPU seconds and Redis commands of each measured Weft run.
pub fn usage(wefts: &[Weft]) {
    println!(
        "| system | scenario | run | wall s | server s | redis-server CPU s | weft CPU s | client CPU s | rest of machine CPU s | Redis calls/step | of which scripts |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for weft in wefts {
        for (shape, figures, usages) in [
            (Shape::FanOut, &weft.fanout, &weft.fanout_usage),
            (Shape::Chain, &weft.chain, &weft.chain_usage),
        ] {
            for (i, (seconds, usage)) in figures.runs.iter().zip(usages).enumerate() {
                println!(
                    "| {} | {} | {} | {seconds:.3} | {:.3} | {} | {} | {} | {} | {:.2} | {:.2} |",
                    label(weft.topology),
                    shape.name(),
                    i + 1,
                    usage.server.as_secs_f64(),
                    secs(usage.redis),
                    secs(usage.weft()),
                    secs(usage.client),
                    secs(usage.other),
                    usage.calls() as f64 / figures.steps as f64,
                    usage.scripts() as f64 / figures.steps as f64,
                );
            }
        }
    }
}

/// The comparison: medians and the ratios, written so that > 1 favours Weft.
pub fn table(wefts: &[Weft], peers: &[Peer]) {
    let weft = |t| wefts.iter().find(|w| w.topology == t);
    let one = weft(crate::cluster::Topology::OneNode);
    let two = weft(crate::cluster::Topology::TwoWorkers);
    let peer = |name: &str| peers.iter().find(|p| p.name == name);
    let (restate, celery) = (peer("restate"), peer("celery"));

    println!(
        "Medians. Ratios > 1 mean Weft is better: fan-out = Weft steps/s ÷ peer steps/s, chain = peer ms/step ÷ Weft ms/step; each ratio cell gives Weft on 1 node / Weft on api + 2 workers."
    );
    println!();
    println!(
        "| scenario | Weft (1 node) | Weft (api + 2 workers) | Restate | Celery | Weft/Restate | Weft/Celery | target |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for shape in [Shape::FanOut, Shape::Chain] {
        let figures = |f: Option<(&Figures, &Figures)>| -> Option<f64> {
            let (fanout, chain) = f?;
            Some(match shape {
                Shape::FanOut => fanout.steps_per_s(fanout.median),
                Shape::Chain => chain.ms_per_step(chain.median),
            })
        };
        let one = figures(one.map(|w| (&w.fanout, &w.chain)));
        let two = figures(two.map(|w| (&w.fanout, &w.chain)));
        let restate = figures(restate.map(|p| (&p.fanout, &p.chain)));
        let celery = figures(celery.map(|p| (&p.fanout, &p.chain)));
        let show = |v: Option<f64>| match (v, shape) {
            (None, _) => "—".to_string(),
            (Some(v), Shape::FanOut) => format!("{v:.0} steps/s"),
            (Some(v), Shape::Chain) => format!("{v:.3} ms/step"),
        };
        let ratio = |weft: Option<f64>, peer: Option<f64>| -> String {
            match (weft, peer) {
                (Some(w), Some(p)) => format!(
                    "{:.1}×",
                    match shape {
                        Shape::FanOut => w / p,
                        Shape::Chain => p / w,
                    }
                ),
                _ => "—".to_string(),
            }
        };
        let ratios = |peer| format!("{} / {}", ratio(one, peer), ratio(two, peer));
        let target = match shape {
            Shape::FanOut => format!("≥ {FANOUT_TARGET:.0} steps/s"),
            Shape::Chain => format!("≤ {CHAIN_TARGET} ms/step"),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {target} |",
            shape.name(),
            show(one),
            show(two),
            show(restate),
            show(celery),
            ratios(restate),
            ratios(celery),
        );
    }
}
