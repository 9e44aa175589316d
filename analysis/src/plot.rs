//! Bar charts of protected counts (PNG or SVG) with plotters and an embedded font
//! (DejaVu Sans, `assets/`), so a chart looks the same on every machine.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::AnalysisError;
use crate::recipe::Chart;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is embedded and valid; a failure here would be a build defect.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draws `bars` (label, protected count; redacted bars are left empty) to `path`.
pub fn bar_chart(path: &Path, chart: &Chart, bars: &[(String, Option<i64>)]) -> Result<(), AnalysisError> {
    register_font();
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    let err = |e: String| AnalysisError(format!("{}: cannot draw the chart: {e}", path.display()));
    match ext.as_str() {
        "png" => {
            let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
            draw(&root, chart, bars).map_err(err)?;
            root.present().map_err(|e| err(e.to_string()))
        }
        "svg" => {
            let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
            draw(&root, chart, bars).map_err(err)?;
            root.present().map_err(|e| err(e.to_string()))
        }
        _ => Err(AnalysisError(format!("{}: charts are written as .png or .svg", path.display()))),
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
    bars: &[(String, Option<i64>)],
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, body) = root.split_vertically(if chart.subtitle.is_some() { 70 } else { 45 });
    top.draw_text(&chart.title, &("sans-serif", 24).into_font().color(&BLACK), (20, 12)).map_err(|e| e.to_string())?;
    if let Some(sub) = &chart.subtitle {
        top.draw_text(sub, &("sans-serif", 17).into_font().color(&RGBColor(90, 90, 90)), (20, 44)).map_err(|e| e.to_string())?;
    }
    let max = bars.iter().filter_map(|b| b.1).max().unwrap_or(0).max(1);
    let n = bars.len().max(1);
    let mut c = ChartBuilder::on(&body)
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n).into_segmented(), 0i64..(max + max / 10 + 1))
        .map_err(|e| e.to_string())?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    c.configure_mesh()
        .disable_x_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(220, 220, 220))
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(n.min(30))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()
        .map_err(|e| e.to_string())?;
    c.draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
        b.1.map(|h| {
            let mut r = Rectangle::new([(SegmentValue::Exact(i), 0), (SegmentValue::Exact(i + 1), h)], RGBColor(89, 89, 89).filled());
            r.set_margin(0, 0, 3, 3);
            r
        })
    }))
    .map_err(|e| e.to_string())?;
    Ok(())
}
