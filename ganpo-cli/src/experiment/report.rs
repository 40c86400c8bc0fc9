//! The experiment's report: means over seeds, GANPO's paired differences, `results.md` and
//! `plots/`.

use std::collections::BTreeMap;
use std::path::Path;

use super::ExperimentConfig;
use super::config::base_of;
use super::stats::Interval;
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::stages::{PolicyEval, RunSpec, selection_temperature};

/// What `results.json` holds.
#[derive(Serialize)]
pub(super) struct Results {
    pub(super) reward_model: Value,
    pub(super) reference: PolicyEval,
    pub(super) sweep: Vec<(RunSpec, PolicyEval)>,
    pub(super) chosen: Vec<RunSpec>,
    pub(super) runs: Vec<(RunSpec, PolicyEval)>,
    /// Per method, noise level and `set@temperature`: the reward over seeds.
    pub(super) summary: Vec<SummaryRow>,
    /// GANPO minus its base method, paired by seed.
    pub(super) comparisons: Vec<Comparison>,
    pub(super) stage_seconds: Vec<(String, f64)>,
    pub(super) total_seconds: f64,
}

#[derive(Serialize)]
pub(super) struct SummaryRow {
    pub(super) method: String,
    pub(super) label_noise: f64,
    pub(super) reward: BTreeMap<String, Interval>,
    pub(super) kl: Interval,
}

#[derive(Serialize)]
pub(super) struct Comparison {
    pub(super) method: String,
    pub(super) base: String,
    pub(super) label_noise: f64,
    pub(super) at: String,
    pub(super) difference: Interval,
}

/// Means over seeds of every chosen method and noise level, and GANPO's paired differences.
pub(super) fn summarize(
    c: &ExperimentConfig,
    runs: &[(RunSpec, PolicyEval)],
    reference: &PolicyEval,
) -> (Vec<SummaryRow>, Vec<Comparison>) {
    // Validation rewards chose the settings; only held-out prompts are reported.
    let keys: Vec<String> = reference
        .reward
        .keys()
        .filter(|k| !k.starts_with("validation"))
        .cloned()
        .collect();
    let of = |method: &str, noise: f64| -> Vec<&(RunSpec, PolicyEval)> {
        let mut v: Vec<_> = runs
            .iter()
            .filter(|(r, _)| r.method == method && r.label_noise == noise)
            .collect();
        v.sort_by_key(|(r, _)| r.seed);
        v
    };
    // Rows by increasing noise, whatever order the runs went in.
    let mut levels = c.pairs.label_noise.clone();
    levels.sort_by(f64::total_cmp);
    let mut rows = Vec::new();
    let mut comparisons = Vec::new();
    for method in &c.train.methods {
        for &noise in &levels {
            let group = of(method, noise);
            if group.is_empty() {
                continue;
            }
            let reward = keys
                .iter()
                .map(|k| {
                    let v: Vec<f64> = group.iter().map(|(_, e)| e.reward[k].mean).collect();
                    (k.clone(), Interval::of(&v))
                })
                .collect();
            let kl: Vec<f64> = group.iter().map(|(_, e)| e.kl.mean).collect();
            rows.push(SummaryRow {
                method: method.clone(),
                label_noise: noise,
                reward,
                kl: Interval::of(&kl),
            });
            let Some(base) = base_of(method) else {
                continue;
            };
            let base_group = of(base, noise);
            for k in &keys {
                let diffs: Vec<f64> = group
                    .iter()
                    .filter_map(|(r, e)| {
                        let b = base_group.iter().find(|(rb, _)| rb.seed == r.seed)?;
                        Some(e.reward[k].mean - b.1.reward[k].mean)
                    })
                    .collect();
                if !diffs.is_empty() {
                    comparisons.push(Comparison {
                        method: method.clone(),
                        base: base.to_string(),
                        label_noise: noise,
                        at: k.clone(),
                        difference: Interval::of(&diffs),
                    });
                }
            }
        }
    }
    (rows, comparisons)
}

/// `results.md`: the tables of `results`.
pub(super) fn markdown(c: &ExperimentConfig, r: &Results) -> String {
    let mut s = String::from("# IMDb experiment results\n\n");
    s += &format!(
        "Reward model: accuracy {:.4} on {} held-out IMDb test reviews.\n\n",
        r.reward_model["test_accuracy"].as_f64().unwrap_or(f64::NAN),
        r.reward_model["test_reviews"]
    );
    let keys: Vec<&String> = r
        .reference
        .reward
        .keys()
        .filter(|k| !k.starts_with("validation"))
        .collect();
    s += "## Rewards of the chosen settings (mean over seeds ± 95% CI)\n\n| method | noise | ";
    s += &keys
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(" | ");
    s += " | KL |\n|---|---|";
    s += &"---|".repeat(keys.len() + 1);
    s += "\n";
    s += &format!(
        "| reference | – | {} | 0 |\n",
        keys.iter()
            .map(|k| format!("{:.3}", r.reference.reward[*k].mean))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for row in &r.summary {
        s += &format!(
            "| {} | {} | {} | {} |\n",
            row.method,
            row.label_noise,
            keys.iter()
                .map(|k| row.reward[*k].display(3))
                .collect::<Vec<_>>()
                .join(" | "),
            row.kl.display(3)
        );
    }
    if c.train.seeds.len() == 1 && !r.runs.is_empty() {
        // No interval over seeds: say how far one evaluation's mean is from its expectation.
        let se: Vec<f64> = r
            .runs
            .iter()
            .flat_map(|(_, e)| e.reward.values().map(|m| m.std_error))
            .collect();
        let (lo, hi) = se
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        s += &format!(
            "\nOne seed, so no interval over seeds; the standard error of each mean over its prompts \
             is {lo:.3}-{hi:.3}.\n"
        );
    }
    s += "\n## GANPO minus its base method (paired by seed, 95% CI)\n\n| method | noise | at | difference | CI excludes 0 |\n|---|---|---|---|---|\n";
    for cmp in r
        .comparisons
        .iter()
        .filter(|c| !c.at.starts_with("validation"))
    {
        let excludes = cmp.difference.half_width.map(|h| {
            if cmp.difference.mean - h > 0.0 {
                "yes (GANPO higher)"
            } else if cmp.difference.mean + h < 0.0 {
                "yes (GANPO lower)"
            } else {
                "no"
            }
        });
        s += &format!(
            "| {} vs {} | {} | {} | {} | {} |\n",
            cmp.method,
            cmp.base,
            cmp.label_noise,
            cmp.at,
            cmp.difference.display(3),
            excludes.unwrap_or("one seed")
        );
    }
    let sel = format!("validation@{}", selection_temperature(c));
    s += &format!(
        "\n## Sweep (noise {}, seed {}; chosen by `{sel}`)\n\n| method | beta | adv_weight | {sel} | test@{} | KL |\n|---|---|---|---|---|---|\n",
        c.pairs.label_noise[0],
        c.train.seeds[0],
        selection_temperature(c)
    );
    for (run, e) in &r.sweep {
        let chosen = if r.chosen.contains(run) {
            " (chosen)"
        } else {
            ""
        };
        s += &format!(
            "| {}{chosen} | {} | {} | {} | {:.3} | {:.3} |\n",
            run.method,
            run.beta,
            run.adv_weight.map_or("–".into(), |a| a.to_string()),
            e.reward
                .get(&sel)
                .map_or("– (only setting)".into(), |r| format!("{:.3}", r.mean)),
            e.reward[&format!("test@{}", selection_temperature(c))].mean,
            e.kl.mean
        );
    }
    s +=
        "\n## Wall time (summed over the sessions that ran it)\n\n| stage | seconds |\n|---|---|\n";
    let mut stages: Vec<(&str, f64)> = Vec::new();
    for (stage, secs) in &r.stage_seconds {
        match stages.iter_mut().find(|(s, _)| s == stage) {
            Some((_, total)) => *total += secs,
            None => stages.push((stage, *secs)),
        }
    }
    for (stage, secs) in stages {
        s += &format!("| {stage} | {secs:.0} |\n");
    }
    s += &format!("| total | {:.0} |\n", r.total_seconds);
    s
}

/// `plots/`: the reward-KL frontier of the sweep, and rewards by temperature of the chosen runs.
pub(super) fn plots(out: &Path, c: &ExperimentConfig, r: &Results) -> Result<()> {
    use crate::commands::plot::{Point, draw_points, register_font};
    let dir = out.join("plots");
    std::fs::create_dir_all(&dir)?;
    let text = register_font();
    let t = selection_temperature(c);
    let key = format!("test@{t}");
    let mut frontier: Vec<Point> = r
        .sweep
        .iter()
        .map(|(run, e)| Point {
            label: run.method.clone(),
            x: e.kl.mean,
            y: e.reward[&key].mean,
            err: e.reward[&key].std_error,
        })
        .collect();
    frontier.push(Point {
        label: "reference".into(),
        x: 0.0,
        y: r.reference.reward[&key].mean,
        err: r.reference.reward[&key].std_error,
    });
    draw_points(
        &dir.join("frontier.png"),
        &format!("Reward vs KL, IMDb test prompts, T = {t} (sweep: every beta / adv_weight)"),
        (
            "KL(policy || reference), nats",
            "mean reward (log-odds positive)",
        ),
        &frontier,
        text,
    )?;
    // Methods side by side around each temperature or noise level, so their intervals do not
    // hide one another: `width` is the spread of all methods in the x axis' units.
    let beside = |method: &str, width: f64| {
        let n = c.train.methods.len().max(2) as f64;
        let i = c
            .train
            .methods
            .iter()
            .position(|m| m == method)
            .unwrap_or(0) as f64;
        width * (i / (n - 1.0) - 0.5)
    };
    for set in ["test", "shift"] {
        let noise = c.pairs.label_noise[0];
        let points: Vec<Point> = r
            .summary
            .iter()
            .filter(|row| row.label_noise == noise)
            .flat_map(|row| {
                c.eval.temperatures.iter().map(move |&t| {
                    let i = &row.reward[&format!("{set}@{t}")];
                    Point {
                        label: row.method.clone(),
                        x: t + beside(&row.method, 0.08),
                        y: i.mean,
                        err: i.half_width.unwrap_or(0.0),
                    }
                })
            })
            .collect();
        draw_points(
            &dir.join(format!("reward_by_temperature_{set}.png")),
            &format!(
                "Reward by sampling temperature, {set} prompts (noise {noise}, 95% CI over seeds)"
            ),
            ("temperature", "mean reward"),
            &points,
            text,
        )?;
    }
    let points: Vec<Point> = r
        .summary
        .iter()
        .map(|row| {
            let i = &row.reward[&key];
            Point {
                label: row.method.clone(),
                x: row.label_noise + beside(&row.method, 0.04),
                y: i.mean,
                err: i.half_width.unwrap_or(0.0),
            }
        })
        .collect();
    draw_points(
        &dir.join("reward_by_label_noise.png"),
        &format!("Reward by label noise, IMDb test prompts, T = {t} (95% CI over seeds)"),
        ("share of flipped pair labels", "mean reward"),
        &points,
        text,
    )
}
