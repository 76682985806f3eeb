//! `cargo xtask bench NAME --plot` and `cargo xtask plot NAME FILE`: an SVG chart (plotters) of
//! a bench run's `BENCH` lines, Strata against the baselines measured in the same run.
//!
//! - `lsm`: throughput of each db_bench workload, Strata, RocksDB and fjall side by side
//!   (log scale: fillsync and fillseq differ by 25x);
//! - `cluster`: for each workload, throughput and p99 latency by client count, Strata and etcd;
//! - `watch`: events delivered per second in each phase, Strata and etcd;
//! - any other bench: its `RATIO` lines as bars, with 1 (parity) marked.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// One `BENCH` line's value and unit, by name (the last line of a name wins: benches print
/// their medians last).
#[derive(Debug, Default)]
pub struct Figures {
    bench: BTreeMap<String, (f64, String)>,
    ratios: BTreeMap<String, f64>,
}

impl Figures {
    /// The `BENCH NAME VALUE UNIT` and `RATIO NAME VALUE` lines of a bench's output.
    pub fn parse(text: &str) -> Self {
        let mut figures = Self::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("BENCH"), Some(name), Some(value)) => {
                    if let Ok(value) = value.parse::<f64>() {
                        let unit = words.next().unwrap_or("").to_owned();
                        figures.bench.insert(name.to_owned(), (value, unit));
                    }
                }
                (Some("RATIO"), Some(name), Some(value)) => {
                    if let Ok(value) = value.parse::<f64>() {
                        figures.ratios.insert(name.to_owned(), value);
                    }
                }
                _ => {}
            }
        }
        figures
    }

    fn value(&self, name: &str) -> Option<f64> {
        self.bench.get(name).map(|(v, _)| *v).filter(|v| *v > 0.0)
    }
}

/// A series: its legend name, its colour, and the prefix of its `BENCH` names.
struct Series {
    label: &'static str,
    color: RGBColor,
    prefix: &'static str,
}

const STRATA: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const BASELINE_1: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const BASELINE_2: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

const WIDTH: u32 = 960;
const FONT: &str = "sans-serif";

/// The chart for bench `name` from `figures`, as SVG text.
///
/// # Errors
///
/// The run printed none of the figures the chart needs, or drawing failed.
pub fn chart(name: &str, figures: &Figures) -> Result<String> {
    match name {
        "lsm" => grouped_bars(
            "strata-lsm against RocksDB (db_bench) and fjall: throughput",
            "ops/s (log scale)",
            &[
                ("fillseq", "fillseq"),
                ("fillrandom", "fillrandom"),
                ("overwrite", "overwrite"),
                ("readrandom", "readrandom"),
                ("seekrandom", "seekrandom"),
                ("readwhilewriting", "readwhilewriting"),
                ("fillsync", "fillsync"),
            ],
            &[
                Series {
                    label: "Strata",
                    color: STRATA,
                    prefix: "lsm_",
                },
                Series {
                    label: "RocksDB",
                    color: BASELINE_1,
                    prefix: "rocksdb_",
                },
                Series {
                    label: "fjall",
                    color: BASELINE_2,
                    prefix: "fjall_",
                },
            ],
            figures,
        ),
        "watch" => grouped_bars(
            "Watch: events delivered per second, one member",
            "events/s (log scale)",
            &[
                ("events_1stream", "10,000 watchers on one stream"),
                ("events_100k", "100,000 watchers on 10 streams"),
            ],
            &[
                Series {
                    label: "Strata",
                    color: STRATA,
                    prefix: "watch_",
                },
                Series {
                    label: "etcd 3.4",
                    color: BASELINE_1,
                    prefix: "etcd_watch_",
                },
            ],
            figures,
        ),
        "cluster" => cluster(figures),
        _ => ratios(name, figures),
    }
}

/// Writes the chart for bench `name` from the output `text` to `out`.
///
/// # Errors
///
/// As [`chart`], and the file's write.
pub fn write(name: &str, text: &str, out: &Path) -> Result<()> {
    let svg = chart(name, &Figures::parse(text))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(out, svg).with_context(|| format!("write {}", out.display()))?;
    println!("plot: wrote {}", out.display());
    Ok(())
}

/// An axis whose labels and mesh lines are at the points given (the centres of bar groups,
/// the client counts measured), not at plotters' round numbers.
struct Keyed<R> {
    inner: R,
    keys: Vec<f64>,
}

impl<R: Ranged<ValueType = f64>> Keyed<R> {
    fn new(inner: R, keys: Vec<f64>) -> Self {
        Self { inner, keys }
    }
}

impl<R: Ranged<ValueType = f64>> Ranged for Keyed<R> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.keys.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// `(lo, hi)` for a log axis holding `values`: whole powers of ten around them, two decades at
/// least (plotters fills a single decade with a dense light mesh).
fn log_bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (lo <= hi).then(|| {
        (
            10f64.powf(lo.log10().floor()),
            10f64
                .powf(hi.log10().ceil())
                .max(10f64.powf(lo.log10().floor()) * 100.0),
        )
    })
}

/// Tick labels for people: 1.2M, 350k, 42.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
}

/// Groups of bars, one group per `(group, label)` (its `BENCH` name is the series prefix + the
/// group), one bar per series, on a log axis. Groups no series has are left out.
fn grouped_bars(
    title: &str,
    y_desc: &str,
    groups: &[(&str, &str)],
    series: &[Series],
    figures: &Figures,
) -> Result<String> {
    let (groups, labels): (Vec<&str>, Vec<&str>) = groups
        .iter()
        .copied()
        .filter(|(g, _)| {
            series
                .iter()
                .any(|s| figures.value(&format!("{}{g}", s.prefix)).is_some())
        })
        .unzip();
    let Some((lo, hi)) = log_bounds(groups.iter().flat_map(|g| {
        series
            .iter()
            .filter_map(move |s| figures.value(&format!("{}{g}", s.prefix)))
    })) else {
        bail!("the run printed none of the figures this chart shows ({title})");
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let n = groups.len() as f64;
        let centers: Vec<f64> = (0..groups.len()).map(|i| i as f64 + 0.5).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                Keyed::new(RangedCoordf64::from(0f64..n), centers),
                (lo..hi).log_scale(),
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| {
                labels
                    .get(x.floor().max(0.0) as usize)
                    .map_or_else(String::new, |g| (*g).to_owned())
            })
            .y_label_formatter(&|y| short(*y))
            .y_desc(y_desc)
            .label_style((FONT, 13))
            .draw()?;
        let width = 0.8 / series.len() as f64;
        for (j, s) in series.iter().enumerate() {
            let bars: Vec<_> = groups
                .iter()
                .enumerate()
                .filter_map(|(i, g)| {
                    let v = figures.value(&format!("{}{g}", s.prefix))?;
                    let x0 = i as f64 + 0.1 + j as f64 * width;
                    Some(Rectangle::new(
                        [(x0, lo), (x0 + width * 0.92, v)],
                        s.color.filled(),
                    ))
                })
                .collect();
            let color = s.color;
            chart
                .draw_series(bars)?
                .label(s.label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .label_font((FONT, 13))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// The cluster bench's workloads, in its order.
const CLUSTER_WORKLOADS: &[&str] = &[
    "put",
    "get_linearizable",
    "get_serializable",
    "txn_cas",
    "range_100",
    "mixed_80_20",
];

/// For each cluster workload, throughput and p99 latency by client count (log axes), Strata
/// against etcd.
fn cluster(figures: &Figures) -> Result<String> {
    // The client counts the run measured, from the names (`cluster_put_500c`).
    let mut clients: Vec<u32> = figures
        .bench
        .keys()
        .filter_map(|name| {
            let rest = name.strip_prefix("cluster_")?;
            let (_, tail) = rest.rsplit_once('_')?;
            tail.strip_suffix('c')?.parse().ok()
        })
        .collect();
    clients.sort_unstable();
    clients.dedup();
    let workloads: Vec<&str> = CLUSTER_WORKLOADS
        .iter()
        .copied()
        .filter(|w| {
            clients
                .iter()
                .any(|c| figures.value(&format!("cluster_{w}_{c}c")).is_some())
        })
        .collect();
    if workloads.is_empty() {
        bail!("the run printed no cluster_<workload>_<N>c figures");
    }
    let systems = [("Strata", STRATA, ""), ("etcd 3.4", BASELINE_1, "etcd_")];
    let row_px = 260;
    let mut svg = String::new();
    {
        let height = 50 + row_px * workloads.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(
            "3-member cluster against etcd 3.4: throughput and p99 latency by clients",
            (FONT, 20),
        )?;
        let panels = root.split_evenly((workloads.len(), 2));
        let x_hi = f64::from(*clients.last().unwrap_or(&1)).max(2.0);
        let keys: Vec<f64> = clients.iter().map(|c| f64::from(*c)).collect();
        for (row, workload) in workloads.iter().enumerate() {
            for (column, (what, suffix, unit)) in
                [("throughput", "", "ops/s"), ("p99 latency", "_p99", "ms")]
                    .into_iter()
                    .enumerate()
            {
                // Latencies are printed in microseconds; shown in milliseconds.
                let scale = if suffix.is_empty() { 1.0 } else { 1e-3 };
                let point = |prefix: &str, c: u32| {
                    figures
                        .value(&format!("{prefix}cluster_{workload}_{c}c{suffix}"))
                        .map(|v| (f64::from(c), v * scale))
                };
                let Some((lo, hi)) = log_bounds(systems.iter().flat_map(|(_, _, prefix)| {
                    clients
                        .iter()
                        .filter_map(move |c| point(prefix, *c))
                        .map(|(_, v)| v)
                })) else {
                    continue;
                };
                let area = &panels[row * 2 + column];
                let mut chart = ChartBuilder::on(area)
                    .caption(format!("{workload}: {what}"), (FONT, 15))
                    .margin(8)
                    .margin_right(24)
                    .x_label_area_size(30)
                    .y_label_area_size(55)
                    .build_cartesian_2d(
                        Keyed::new(LogCoord::from((1f64..x_hi).log_scale()), keys.clone()),
                        (lo..hi).log_scale(),
                    )?;
                chart
                    .configure_mesh()
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .y_label_formatter(&|y| short(*y))
                    .x_desc("clients")
                    .y_desc(unit)
                    .label_style((FONT, 11))
                    .draw()?;
                for (label, color, prefix) in systems {
                    let points: Vec<(f64, f64)> =
                        clients.iter().filter_map(|c| point(prefix, *c)).collect();
                    if points.is_empty() {
                        continue;
                    }
                    chart
                        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                        .label(label)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                        });
                    chart.draw_series(
                        points
                            .into_iter()
                            .map(|p| Circle::new(p, 3, color.filled())),
                    )?;
                }
                chart
                    .configure_series_labels()
                    .position(if suffix.is_empty() {
                        SeriesLabelPosition::LowerRight
                    } else {
                        SeriesLabelPosition::UpperLeft
                    })
                    .border_style(BLACK)
                    .background_style(WHITE.mix(0.9))
                    .label_font((FONT, 11))
                    .draw()?;
            }
        }
        root.present()?;
    }
    Ok(svg)
}

/// Any bench: its `RATIO` lines as horizontal bars, 1 (parity with the baseline) marked.
fn ratios(name: &str, figures: &Figures) -> Result<String> {
    if figures.ratios.is_empty() {
        bail!("the run printed no RATIO lines to plot");
    }
    let entries: Vec<(&String, f64)> = figures.ratios.iter().map(|(k, v)| (k, *v)).collect();
    let hi = entries.iter().map(|(_, v)| *v).fold(1.0f64, f64::max) * 1.15;
    let n = entries.len() as f64;
    let mut svg = String::new();
    {
        let height = 90 + 26 * entries.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let centers: Vec<f64> = (0..entries.len()).map(|i| i as f64 + 0.5).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{name}: Strata against its baseline (above 1: Strata ahead)"),
                (FONT, 18),
            )
            .margin(16)
            .x_label_area_size(30)
            .y_label_area_size(330)
            .build_cartesian_2d(0f64..hi, Keyed::new(RangedCoordf64::from(0f64..n), centers))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_label_formatter(&|y| {
                entries
                    .get(y.floor().max(0.0) as usize)
                    .map_or_else(String::new, |(k, _)| (*k).clone())
            })
            .label_style((FONT, 12))
            .draw()?;
        chart.draw_series(entries.iter().enumerate().map(|(i, (_, v))| {
            let color = if *v >= 1.0 { STRATA } else { BASELINE_1 };
            Rectangle::new(
                [(0.0, i as f64 + 0.15), (*v, i as f64 + 0.85)],
                color.filled(),
            )
        }))?;
        chart.draw_series(LineSeries::new(
            vec![(1.0, 0.0), (1.0, n)],
            BLACK.stroke_width(1),
        ))?;
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LSM: &str = "\
BENCH lsm_fillseq 1256129 ops/s
BENCH rocksdb_fillseq 353481 ops/s
BENCH fjall_fillseq 517415 ops/s
BENCH lsm_fillsync 47614 ops/s
BENCH rocksdb_fillsync 25448 ops/s
BENCH fjall_fillsync 7215 ops/s
RATIO lsm_fillseq_vs_rocksdb 3.55
";

    const CLUSTER: &str = "\
BENCH cluster_put_1c 1234 ops/s
BENCH cluster_put_1c_p99 1723 us
BENCH etcd_cluster_put_1c 1219 ops/s
BENCH etcd_cluster_put_1c_p99 1599 us
BENCH cluster_put_500c 12068 ops/s
BENCH cluster_put_500c_p99 119621 us
BENCH etcd_cluster_put_500c 10451 ops/s
BENCH etcd_cluster_put_500c_p99 138054 us
";

    /// The SVG parses as XML; returns its text nodes and the fill colours of its rectangles.
    fn parse(svg: &str) -> (Vec<String>, Vec<String>) {
        let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts = doc
            .descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text().map(str::trim).map(str::to_owned))
            .filter(|t| !t.is_empty())
            .collect();
        let fills = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .filter_map(|n| n.attribute("fill").map(str::to_owned))
            .collect();
        (texts, fills)
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    #[test]
    fn the_lsm_chart_is_svg_with_a_bar_per_engine_and_workload() {
        let svg = chart("lsm", &Figures::parse(LSM)).expect("chart");
        let (texts, fills) = parse(&svg);
        for label in ["Strata", "RocksDB", "fjall", "fillseq", "fillsync"] {
            assert!(
                texts.iter().any(|t| t == label),
                "no {label:?} in {texts:?}"
            );
        }
        // Two workloads: two bars and a legend swatch per engine.
        for color in [STRATA, BASELINE_1, BASELINE_2] {
            let bars = fills
                .iter()
                .filter(|f| f.eq_ignore_ascii_case(&hex(color)))
                .count();
            assert_eq!(bars, 3, "{} in {fills:?}", hex(color));
        }
        // A workload no engine ran is left out.
        assert!(!texts.iter().any(|t| t == "readrandom"));
    }

    #[test]
    fn the_cluster_chart_has_both_systems_by_client_count() {
        let svg = chart("cluster", &Figures::parse(CLUSTER)).expect("chart");
        let (texts, _) = parse(&svg);
        for label in [
            "Strata",
            "etcd 3.4",
            "put: throughput",
            "put: p99 latency",
            "500",
        ] {
            assert!(
                texts.iter().any(|t| t == label),
                "no {label:?} in {texts:?}"
            );
        }
        // Two panels, each with a line (and a legend line) and a point per client count for
        // each system.
        for color in [STRATA, BASELINE_1] {
            let stroke = format!("stroke=\"{}\"", hex(color));
            let lines = svg
                .lines()
                .filter(|l| l.starts_with("<polyline") && l.contains(&stroke))
                .count();
            assert_eq!(lines, 4, "{stroke}");
            let fill = format!("fill=\"{}\"", hex(color));
            let points = svg
                .lines()
                .filter(|l| l.starts_with("<circle") && l.contains(&fill))
                .count();
            assert_eq!(points, 4, "{fill}");
        }
    }

    #[test]
    fn other_benches_plot_their_ratios_and_a_run_without_figures_is_an_error() {
        let svg =
            chart("wal", &Figures::parse("RATIO wal_append_vs_okaywal 2.5\n")).expect("chart");
        let (texts, _) = parse(&svg);
        assert!(
            texts.iter().any(|t| t == "wal_append_vs_okaywal"),
            "{texts:?}"
        );
        assert!(chart("lsm", &Figures::parse("nothing here\n")).is_err());
        assert!(chart("wal", &Figures::parse("")).is_err());
    }

    #[test]
    fn the_last_line_of_a_name_wins() {
        let f = Figures::parse("BENCH a 1 x\nBENCH a 2 x\nRATIO r 0.5\nBENCH bad notanumber\n");
        assert_eq!(f.value("a"), Some(2.0));
        assert_eq!(f.ratios.get("r"), Some(&0.5));
        assert_eq!(f.value("bad"), None);
    }
}
