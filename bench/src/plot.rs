//! One SVG per sweep: warm median against the swept dimension, log-log,
//! one line per collector.

use crate::measure::Row;
use crate::plan::{Sweep, COLLECTORS};
use plotters::prelude::*;
use std::path::Path;

pub fn sweep(path: &Path, sw: &Sweep, rows: &[Row]) -> anyhow::Result<()> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = COLLECTORS
        .iter()
        .map(|&name| {
            let pts = sw
                .points
                .iter()
                .filter_map(|p| {
                    let r = rows
                        .iter()
                        .find(|r| r.collector == name && !r.cold && r.spec() == *p)?;
                    Some((sw.dim.of(p) as f64, (r.median_ns as f64 / 1e6).max(1e-4)))
                })
                .collect();
            (name, pts)
        })
        .filter(|(_, p): &(&str, Vec<(f64, f64)>)| !p.is_empty())
        .collect();
    let xs = sw.points.iter().map(|p| sw.dim.of(p) as f64);
    let (x0, x1) = (xs.clone().fold(f64::MAX, f64::min), xs.fold(0.0, f64::max));
    let ys = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1));
    let (y0, y1) = (ys.clone().fold(f64::MAX, f64::min), ys.fold(0.0, f64::max));
    let (x0, x1) = (x0.max(1.0) / 1.5, x1.max(1.0) * 1.5);
    let (y0, y1) = if series.is_empty() {
        (0.001, 1.0)
    } else {
        (y0 / 2.0, y1 * 2.0)
    };

    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("collection time vs {}", sw.dim.name()),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(sw.dim.name())
        .y_desc("median ms per collection (warm)")
        .draw()?;
    let colors = [RED, BLUE, GREEN, MAGENTA, BLACK, CYAN];
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
