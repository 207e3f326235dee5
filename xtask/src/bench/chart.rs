//! The report's bar chart (`target/bench/report.png`): per job, the IOPS of
//! the C daemon and of ours as a ratio to the kernel's `fileio`.
//!
//! Text is drawn with plotters' `ab_glyph` backend from a TrueType file
//! read at run time (Debian's DejaVu Sans, from `fonts-dejavu-core`), so
//! no fontconfig is needed; without a font the chart has bars and no text.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::{Backstore, Results};

/// Where Debian's `fonts-dejavu-core` puts the font the chart uses.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// The family name the font is registered under.
const FAMILY: &str = "sans-serif";

/// Bar colours: C, ours.
const C_COLOUR: RGBColor = RGBColor(0x9e, 0x9e, 0x9e);
/// See [`C_COLOUR`].
const OURS_COLOUR: RGBColor = RGBColor(0xd9, 0x5f, 0x02);

/// Reads and registers the chart font; `false` when it cannot be had.
pub fn load_font(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok()
}

/// Draws the chart into `out` (PNG, 1400×700). `with_text`: a font was
/// registered with [`load_font`].
pub fn render(r: &Results, out: &Path, with_text: bool) -> Result<()> {
    draw(r, out, with_text).map_err(|e| anyhow!("drawing {}: {e}", out.display()))
}

/// [`render`]'s body, with plotters' error type.
fn draw(r: &Results, out: &Path, with_text: bool) -> Result<(), Box<dyn std::error::Error>> {
    let jobs: Vec<&str> = r.jobs.iter().map(|j| j.name.as_str()).collect();
    let ratios: Vec<[Option<f64>; 2]> = jobs
        .iter()
        .map(|j| [Backstore::C, Backstore::Ours].map(|bs| r.iops_ratio(j, bs, Backstore::Fileio)))
        .collect();
    let top = ratios
        .iter()
        .flatten()
        .flatten()
        .fold(1.0f64, |m, &v| m.max(v));
    let y_max = (top * 1.15 * 10.0).ceil() / 10.0;
    let n = jobs.len().max(1) as f64;

    let root = BitMapBackend::new(out, (1400, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let font = |size: u32| (FAMILY, size).into_font();
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(20)
        .x_label_area_size(if with_text { 50 } else { 10 })
        .y_label_area_size(if with_text { 70 } else { 10 });
    if with_text {
        let title = format!(
            "IOPS relative to the kernel's fileio backstore (= 1.0), {} round(s) of {} s, kernel {}",
            r.info.get("rounds").map_or("?", String::as_str),
            r.info.get("runtime").map_or("?", String::as_str),
            r.info.get("kernel").map_or("?", String::as_str),
        );
        builder.caption(title, font(22));
    }
    let mut chart = builder.build_cartesian_2d(0.0..n, 0.0..y_max)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh().max_light_lines(0).x_labels(0);
    if with_text {
        mesh.y_desc("IOPS / fileio IOPS")
            .y_label_formatter(&|y| format!("{y:.1}"))
            .label_style(font(16))
            .axis_desc_style(font(18));
    } else {
        mesh.y_labels(0);
    }
    mesh.draw()?;

    // fileio's level.
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 1.0), (n, 1.0)],
        BLACK.stroke_width(2),
    )))?;
    let width = 0.36;
    for (i, pair) in ratios.iter().enumerate() {
        for (k, (value, colour)) in pair.iter().zip([C_COLOUR, OURS_COLOUR]).enumerate() {
            let Some(v) = *value else { continue };
            let x0 = i as f64 + 0.5 - width + k as f64 * width;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.95, v)],
                colour.filled(),
            )))?;
            if with_text {
                let (px, py) = chart.backend_coord(&(x0 + width * 0.47, v));
                root.draw(&Text::new(format!("{v:.2}"), (px - 16, py - 20), font(15)))?;
            }
        }
    }
    if with_text {
        for (i, job) in jobs.iter().enumerate() {
            let label = super::report::short_label(r, job);
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            let half = (label.chars().count() as i32 * 8) / 2;
            root.draw(&Text::new(label, (px - half, py + 10), font(15)))?;
        }
        // Legend, top left inside the plot.
        let (lx, ly) = chart.backend_coord(&(0.0, y_max));
        for (k, (name, colour)) in [
            (Backstore::C.label(), C_COLOUR),
            (Backstore::Ours.label(), OURS_COLOUR),
        ]
        .into_iter()
        .enumerate()
        {
            let y = ly + 12 + k as i32 * 26;
            root.draw(&Rectangle::new(
                [(lx + 14, y), (lx + 34, y + 16)],
                colour.filled(),
            ))?;
            root.draw(&Text::new(name, (lx + 42, y), font(16)))?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report;

    #[test]
    fn renders_png() {
        let dir = std::env::temp_dir().join(format!("xtask-chart-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        report::tests::fixture(&dir);
        let r = report::load(&dir).unwrap();
        // Without text always; with text when the machine has the font.
        let plain = dir.join("plain.png");
        render(&r, &plain, false).unwrap();
        let with_font = load_font(Path::new(FONT_PATH));
        let text = dir.join("text.png");
        render(&r, &text, with_font).unwrap();
        for p in [&plain, &text] {
            let png = std::fs::read(p).unwrap();
            assert!(
                png.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{} is no PNG",
                p.display()
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
