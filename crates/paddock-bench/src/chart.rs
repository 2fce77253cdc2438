//! The SVG chart: one panel per scenario (and variant), the latency distribution of each
//! implementation as an empirical CDF on a logarithmic time axis. plotters' SVG backend
//! only (no font or system libraries).

use std::io;
use std::path::Path;

use plotters::prelude::*;

use crate::report::Row;

const COLORS: &[RGBColor] = &[
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

fn color_of(imp: &str) -> RGBColor {
    let i = crate::IMPLS.iter().position(|x| *x == imp).unwrap_or(7);
    COLORS[i % COLORS.len()]
}

/// Writes the chart of every row that has samples.
pub fn write_svg(path: &Path, rows: &[Row]) -> io::Result<()> {
    let mut groups: Vec<String> = Vec::new();
    for r in rows.iter().filter(|r| !r.samples_us.is_empty()) {
        if !groups.contains(&r.group()) {
            groups.push(r.group());
        }
    }
    let cols = 2usize;
    let nrows = groups.len().div_ceil(cols).max(1);
    let size = (1200u32, 360 * nrows as u32);
    let err = |e: String| io::Error::other(format!("chart: {e}"));
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let panels = root.split_evenly((nrows, cols));
    for (g, area) in groups.iter().zip(panels.iter()) {
        let members: Vec<&Row> = rows
            .iter()
            .filter(|r| &r.group() == g && !r.samples_us.is_empty())
            .collect();
        let lo = members
            .iter()
            .filter_map(|r| r.samples_us.first())
            .fold(f64::INFINITY, |a, b| a.min(*b))
            .max(1.0);
        let hi = members
            .iter()
            .filter_map(|r| r.samples_us.last())
            .fold(0.0f64, |a, b| a.max(*b))
            .max(lo * 2.0);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{g}: latency CDF"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0.0..1.0f64)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("µs (log)")
            .y_desc("fraction ≤ x")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for r in members {
            let n = r.samples_us.len() as f64;
            let c = color_of(&r.imp);
            let pts: Vec<(f64, f64)> = r
                .samples_us
                .iter()
                .enumerate()
                .map(|(i, v)| (*v, (i + 1) as f64 / n))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(r.imp.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
