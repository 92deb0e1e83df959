//! The two SVG plots: latency over the run, and latency by percentile.

use crate::report::Second;
use anyhow::anyhow;
use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (960, 540);

/// A line of the over-time plot: its name, colour and value per second.
type Line = (&'static str, RGBColor, fn(&Second) -> u64);

/// A latency chart in an SVG file, `X` across.
type LatencyChart<'a, 'p, X> =
    ChartContext<'a, SVGBackend<'p>, Cartesian2d<X, WithKeyPoints<LogCoord<f64>>>>;

fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("cannot draw {}: {e}", path.display())
}

/// 1-2-5 steps inside `[lo, hi]`: readable marks on a log axis of milliseconds.
fn marks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

/// `0.5`, `2`, `50`, `1000`: a mark without trailing zeros.
fn mark_label(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Bounds of a log axis holding `values` (milliseconds), with some room.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return (0.1, 10.0);
    }
    (lo / 1.5, hi * 1.5)
}

/// Fills `root` and sets a latency chart up on it, its axes drawn: `caption`, `x` across
/// (`x_desc`, its marks read by `x_label` when given), latency from `lo` to `hi` ms up on a
/// log scale with 1-2-5 marks. The series go on the chart returned.
fn chart<'a, 'p, X>(
    root: &'a DrawingArea<SVGBackend<'p>, Shift>,
    caption: &str,
    x: X,
    x_desc: &str,
    x_label: Option<&dyn Fn(&f64) -> String>,
    (lo, hi): (f64, f64),
    err: impl Fn(DrawingAreaErrorKind<std::io::Error>) -> anyhow::Error,
) -> anyhow::Result<LatencyChart<'a, 'p, X::CoordDescType>>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    root.fill(&WHITE).map_err(&err)?;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(x, (lo..hi).log_scale().with_key_points(marks(lo, hi)))
        .map_err(&err)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc).y_desc("latency (ms, log scale)");
    if let Some(label) = x_label {
        mesh.x_label_formatter(label);
    }
    mesh.y_label_formatter(&|v| mark_label(*v))
        .draw()
        .map_err(&err)?;
    Ok(chart)
}

/// p50, p99 and max latency for every second of the measured window.
pub fn over_time(timeline: &[Second], path: &Path) -> anyhow::Result<()> {
    let err = draw_err(path);
    let ms = |us: u64| us as f64 / 1000.0;
    let bounds = log_bounds(timeline.iter().flat_map(|s| [ms(s.p50_us), ms(s.max_us)]));
    let seconds = timeline.len().max(1) as f64;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let mut chart = chart(
        &root,
        "Latency over the run",
        0f64..seconds,
        "second of the measured window",
        None,
        bounds,
        &err,
    )?;
    let series: [Line; 3] = [
        ("p50", RGBColor(31, 119, 180), |s| s.p50_us),
        ("p99", RGBColor(255, 127, 14), |s| s.p99_us),
        ("max", RGBColor(214, 39, 40), |s| s.max_us),
    ];
    for (name, color, value) in series {
        let points: Vec<(f64, f64)> = timeline
            .iter()
            .filter(|s| s.count > 0)
            .map(|s| (s.second as f64 + 0.5, ms(value(s))))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(&err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

/// Percentile `p` (0 to 1) as `x = 1 / (1 - p)`: 90% is 10, 99% is 100, 99.9% is 1000.
fn x_of(p: f64) -> f64 {
    1.0 / (1.0 - p)
}

fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Latency by percentile, the tail stretched out: x is `1 / (1 - p)` on a log scale.
pub fn percentiles(h: &Histogram<u64>, path: &Path) -> anyhow::Result<()> {
    let err = draw_err(path);
    // Up to the percentile the sample size can tell apart (and at most 99.999%).
    let x_max = (h.len() as f64).clamp(10.0, 100_000.0);
    let points: Vec<(f64, f64)> = (0..=100)
        .map(|k| 1.0 - 10f64.powf(-f64::from(k) / 20.0))
        .filter(|p| x_of(*p) <= x_max)
        .filter(|_| !h.is_empty())
        .map(|p| (x_of(p), h.value_at_quantile(p) as f64 / 1000.0))
        .chain((!h.is_empty()).then(|| (x_max, h.max() as f64 / 1000.0)))
        .collect();
    let bounds = log_bounds(points.iter().map(|p| p.1));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    chart(
        &root,
        "Latency by percentile",
        (1f64..x_max).log_scale(),
        "percentile",
        Some(&|x| percentile_label(*x)),
        bounds,
        &err,
    )?
    .draw_series(LineSeries::new(
        points,
        RGBColor(31, 119, 180).stroke_width(2),
    ))
    .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_marks() {
        assert_eq!(marks(0.8, 60.0), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0]);
        assert_eq!(marks(0.15, 0.6), vec![0.2, 0.5]);
        assert_eq!(mark_label(0.5), "0.5");
        assert_eq!(mark_label(20.0), "20");
    }

    #[test]
    fn percentile_axis() {
        assert_eq!(x_of(0.0), 1.0);
        assert!((x_of(0.99) - 100.0).abs() < 1e-9);
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(100_000.0), "99.999%");
    }
}
