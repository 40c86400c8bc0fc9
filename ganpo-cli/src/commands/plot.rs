//! `ganpo plot RUN_DIR`: PNG plots of a run's `metrics.jsonl`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plotters::prelude::*;

/// Options of `ganpo plot`.
#[derive(clap::Args)]
pub struct Args {
    /// The run directory (holding metrics.jsonl).
    pub run_dir: PathBuf,
    /// Where the PNG files go (default: RUN_DIR/plots).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One plot: a file name, a title, and the metrics drawn on it.
const PLOTS: &[(&str, &str, &[&str])] = &[
    ("losses.png", "Loss", &["loss", "gan/gen_loss", "nll_loss"]),
    (
        "rewards.png",
        "Rewards",
        &["rewards/chosen", "rewards/rejected", "rewards/margins"],
    ),
    (
        "accuracies.png",
        "Reward accuracy",
        &[
            "rewards/accuracies",
            "gan/d_chosen_accuracy",
            "gan/d_rejected_accuracy",
        ],
    ),
    (
        "discriminators.png",
        "GANPO discriminators",
        &["gan/d_chosen_loss", "gan/d_rejected_loss", "gan/gen_loss"],
    ),
    (
        "latent_drift.png",
        "Latent drift (policy vs reference)",
        &["gan/latent_drift_rel"],
    ),
];

/// Fonts tried for the labels when `GANPO_FONT` is not set.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a TrueType font for the labels; false when none is found.
/// Registers a TrueType font for plot labels (once per process); false when none is found.
pub fn register_font() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(find_font)
}

fn find_font() -> bool {
    let candidates = std::env::var_os("GANPO_FONT")
        .map(PathBuf::from)
        .into_iter()
        .chain(FONT_PATHS.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// `(step, value)` series of `metric` in the train and eval lines of `metrics.jsonl`.
/// A metric's training points and eval points, `(step, value)`.
pub type Series = (Vec<(f64, f64)>, Vec<(f64, f64)>);

/// The series of `metric` in a `metrics.jsonl` file.
pub fn read_series(path: &Path, metric: &str) -> Result<Series> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut series: Series = (Vec::new(), Vec::new());
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
        let step = v["step"].as_f64().unwrap_or(0.0);
        if v["split"] == "eval" {
            if let Some(y) = v[format!("eval_{metric}")].as_f64() {
                series.1.push((step, y));
            }
        } else if let Some(y) = v[metric].as_f64() {
            series.0.push((step, y));
        }
    }
    Ok(series)
}

type Chart<'a> = ChartContext<
    'a,
    BitMapBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A chart builder with margins, and with the title and axis-label room when `text`.
fn chart_builder<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    title: &str,
    text: bool,
) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder.margin(15);
    if text {
        builder
            .caption(title, ("sans-serif", 24))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    builder
}

/// The series legend, top right.
fn legend(chart: &mut Chart<'_>) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Draws `lines` (training curves, eval points as dots) against the step.
pub fn draw(path: &Path, title: &str, lines: &[(&str, Series)], text: bool) -> Result<()> {
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let points = lines.iter().flat_map(|(_, (t, e))| t.iter().chain(e));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points.filter(|(_, y)| y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let mut builder = chart_builder(&root, title, text);
    let mut chart = builder.build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("step");
    } else {
        mesh.disable_x_mesh().disable_y_mesh();
    }
    mesh.draw()?;
    for (i, (name, (train, eval))) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let series = chart.draw_series(LineSeries::new(
            train.iter().copied(),
            color.stroke_width(2),
        ))?;
        if text {
            series
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        let eval_series =
            chart.draw_series(eval.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        if text && !eval.is_empty() {
            eval_series
                .label(format!("eval_{name}"))
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        }
    }
    if text {
        legend(&mut chart)?;
    }
    root.present()?;
    Ok(())
}

/// Writes one PNG per metric group that the run has.
pub fn run(args: Args) -> Result<()> {
    let metrics = args.run_dir.join("metrics.jsonl");
    if !metrics.is_file() {
        bail!(
            "{}: no metrics.jsonl (is this a `ganpo train` run directory?)",
            args.run_dir.display()
        );
    }
    let out = args.out.unwrap_or_else(|| args.run_dir.join("plots"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let text = register_font();
    if !text {
        eprintln!(
            "no TrueType font found: plots have no labels (set GANPO_FONT=/path/to/font.ttf)"
        );
    }
    let mut written = 0;
    for (file, title, names) in PLOTS {
        let mut lines = Vec::new();
        for name in *names {
            let s = read_series(&metrics, name)?;
            if !s.0.is_empty() || !s.1.is_empty() {
                lines.push((*name, s));
            }
        }
        if lines.is_empty() {
            continue;
        }
        let path = out.join(file);
        draw(&path, title, &lines, text).with_context(|| format!("drawing {}", path.display()))?;
        println!("{}", path.display());
        written += 1;
    }
    if written == 0 {
        bail!("{}: no plottable metrics", metrics.display());
    }
    Ok(())
}

/// The distinct labels of `points`, in the order they first appear.
fn point_labels(points: &[Point]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for p in points {
        if !labels.contains(&p.label) {
            labels.push(p.label.clone());
        }
    }
    labels
}

/// One labelled point with a vertical error bar (`y ± err`).
pub struct Point {
    /// Legend label.
    pub label: String,
    /// Horizontal position.
    pub x: f64,
    /// Vertical position.
    pub y: f64,
    /// Half-height of the error bar.
    pub err: f64,
}

/// Draws labelled points with error bars (for example reward against KL): one colour and one
/// legend entry per label, in the order labels first appear.
pub fn draw_points(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    points: &[Point],
    text: bool,
) -> Result<()> {
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in points.iter().filter(|p| p.x.is_finite() && p.y.is_finite()) {
        let e = if p.err.is_finite() { p.err } else { 0.0 };
        (x0, x1, y0, y1) = (x0.min(p.x), x1.max(p.x), y0.min(p.y - e), y1.max(p.y + e));
    }
    let (xp, yp) = (((x1 - x0) * 0.08).max(1e-3), ((y1 - y0) * 0.08).max(1e-3));
    let mut builder = chart_builder(&root, title, text);
    let mut chart = builder.build_cartesian_2d((x0 - xp)..(x1 + xp), (y0 - yp)..(y1 + yp))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc(x_desc).y_desc(y_desc);
    }
    mesh.draw()?;
    for (i, label) in point_labels(points).into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mine: Vec<&Point> = points.iter().filter(|p| p.label == label).collect();
        chart.draw_series(mine.iter().map(|p| {
            let e = if p.err.is_finite() { p.err } else { 0.0 };
            PathElement::new(vec![(p.x, p.y - e), (p.x, p.y + e)], color.stroke_width(2))
        }))?;
        let series = chart.draw_series(
            mine.iter()
                .map(|p| Circle::new((p.x, p.y), 6, color.filled())),
        )?;
        if text {
            series
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
        }
    }
    if text {
        legend(&mut chart)?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Point, point_labels};

    #[test]
    fn points_of_one_label_share_a_legend_entry() {
        let p = |label: &str, x: f64| Point {
            label: label.into(),
            x,
            y: 0.0,
            err: 0.0,
        };
        let points = [
            p("dpo", 0.7),
            p("dpo+ganpo", 0.7),
            p("dpo", 1.0),
            p("simpo", 1.0),
        ];
        assert_eq!(point_labels(&points), ["dpo", "dpo+ganpo", "simpo"]);
    }
}
