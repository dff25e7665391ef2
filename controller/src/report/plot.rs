//! Draws one [`Chart`] (lines, each with an optional shaded band) as an inline `<svg>` with
//! `plotters`' SVG backend. Knows nothing of experiments: `figures` turns a status into charts.
//! No I/O: the SVG is written into a string.
//!
//! **Why plotters works without fonts here.** With default features off (no `ttf`, no
//! `ab_glyph`), plotters lays text out with its built-in estimate of glyph widths and the SVG
//! backend writes every label as a `<text>` element, so the browser picks the font: nothing
//! links fontconfig or freetype and no font file ships with weir. Plotters escapes the text it
//! writes; the `<title>` and `aria-label` added here are escaped by [`escape`].
//!
//! The legend is drawn in a strip above the plotting area rather than with plotters' series
//! labels, which sit inside it and would hide the lines they name.

use std::error::Error;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::markup::escape;

/// Width of every chart in pixels.
pub const WIDTH: u32 = 1100;
/// Height of every chart in pixels.
pub const HEIGHT: u32 = 380;

const FONT: &str = "sans-serif";

/// Largest magnitude drawn; farther values (a scrape gone wrong) are left out, since plotters
/// cannot place ticks on a range that overflows.
const LIMIT: f64 = 1e12;

/// Whether `value` can be placed on an axis (on a log axis only above [`1 / LIMIT`]).
fn placeable(value: f64, log: bool) -> bool {
    value.is_finite() && value.abs() <= LIMIT && (!log || value >= 1.0 / LIMIT)
}

/// One point of a line: the estimate and, for a band, its low and high ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Horizontal position in the chart's unit.
    pub x: f64,
    /// The line's value.
    pub y: f64,
    /// The band around it, `(low, high)`.
    pub band: Option<(f64, f64)>,
}

/// A named line, drawn in runs: a run ends where a look had no value.
#[derive(Clone, Debug)]
pub struct Line {
    /// The name in the legend.
    pub name: String,
    /// Its colour, `(red, green, blue)`.
    pub color: (u8, u8, u8),
    /// Runs of consecutive points.
    pub runs: Vec<Vec<Point>>,
}

/// What to draw.
#[derive(Clone, Debug)]
pub struct Chart {
    /// The title, shown on top and as the SVG's `<title>` and `aria-label`.
    pub title: String,
    /// The horizontal axis' description.
    pub x_label: String,
    /// The vertical axis' description.
    pub y_label: String,
    /// Whether the horizontal axis is logarithmic (all `x` must then be positive).
    pub log_x: bool,
    /// Whether to draw a line at `y = 0` and keep 0 in view.
    pub zero_line: bool,
    /// The values the vertical axis can take, such as `0..1` for a share: the range shown
    /// never leaves them.
    pub y_bounds: Option<(f64, f64)>,
    /// The lines, in legend order.
    pub lines: Vec<Line>,
}

/// The chart as an `<svg>` element; never panics: a chart that plotters fails to draw
/// becomes an SVG that says so.
pub fn svg(chart: &Chart) -> String {
    let mut body = String::new();
    let drawn = draw(chart, &mut body);
    if let Err(error) = drawn {
        body = fallback(&format!("could not draw this chart: {error}"));
    }
    label(&body, &chart.title)
}

/// Adds `role`, `aria-label` and a `<title>` to the `<svg>` that plotters opened.
fn label(svg: &str, title: &str) -> String {
    let title = escape(title);
    let Some(rest) = svg.strip_prefix("<svg ") else {
        return svg.to_string();
    };
    let Some(end) = rest.find('>') else {
        return svg.to_string();
    };
    let (attributes, content) = rest.split_at(end + 1);
    format!("<svg class=\"chart\" role=\"img\" aria-label=\"{title}\" {attributes}\n<title>{title}</title>{content}")
}

fn fallback(note: &str) -> String {
    format!(
        "<svg width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"20\" y=\"40\">{}</text></svg>",
        escape(note)
    )
}

/// The smallest and largest of `values`, ignoring what cannot be placed.
fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|&v| placeable(v, false))
        .fold(None, |range, v| match range {
            None => Some((v, v)),
            Some((low, high)) => Some((low.min(v), high.max(v))),
        })
}

/// A range with room around the data, never narrower than a millionth of its magnitude
/// (plotters needs some width to place ticks).
fn padded((low, high): (f64, f64), log: bool) -> (f64, f64) {
    if log {
        return if high > low * 1.01 {
            (low, high)
        } else {
            (low / 2.0, high * 2.0)
        };
    }
    let magnitude = low.abs().max(high.abs());
    if high - low > 1e-6 * magnitude && high - low > 1e-12 {
        let room = (high - low) * 0.05;
        (low - room, high + room)
    } else {
        let room = if magnitude < 1e-9 { 1.0 } else { magnitude * 0.1 };
        (low - room, high + room)
    }
}

/// Whether a point can be drawn on the chart.
fn usable(chart: &Chart, point: &Point) -> bool {
    placeable(point.x, chart.log_x) && placeable(point.y, false)
}

/// Its band when both ends can be drawn.
fn band(point: &Point) -> Option<(f64, f64)> {
    point
        .band
        .filter(|&(low, high)| placeable(low, false) && placeable(high, false))
}

fn points(chart: &Chart) -> impl Iterator<Item = &Point> {
    let lines = chart.lines.iter().flat_map(|line| line.runs.iter().flatten());
    lines.filter(|point| usable(chart, point))
}

fn draw(chart: &Chart, body: &mut String) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::with_string(body, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&chart.title, (FONT, 20))?;
    let (legend, area) = root.split_vertically(26);
    draw_legend(&legend, &chart.lines)?;

    let has_data = points(chart).next().is_some();
    let x_range = extent(points(chart).map(|p| p.x));
    let y_values = points(chart).flat_map(|p| {
        let (low, high) = band(p).unwrap_or((p.y, p.y));
        [p.y, low, high]
    });
    let zero = chart.zero_line.then_some(0.0);
    let (mut y0, mut y1) = padded(extent(y_values.chain(zero)).unwrap_or((0.0, 1.0)), false);
    if let Some((low, high)) = chart.y_bounds.filter(|(low, high)| low < high) {
        (y0, y1) = (y0.max(low), y1.min(high));
        if y0 >= y1 {
            (y0, y1) = (low, high);
        }
    }

    let mut builder = ChartBuilder::on(&area);
    builder.margin(12).x_label_area_size(48).y_label_area_size(76);
    if chart.log_x {
        let (x0, x1) = padded(x_range.unwrap_or((1.0, 1000.0)), true);
        let mut context = builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?;
        draw_content(&mut context, chart, has_data)?;
    } else {
        let (x0, x1) = padded(x_range.unwrap_or((0.0, 1.0)), false);
        // Times and look numbers start at 0: padding must not invent negative ones.
        let x0 = if x_range.is_some_and(|(low, _)| low >= 0.0) {
            x0.max(0.0)
        } else {
            x0
        };
        let mut context = builder.build_cartesian_2d(x0..x1, y0..y1)?;
        draw_content(&mut context, chart, has_data)?;
    }
    root.present()?;
    Ok(())
}

/// A tick label: the shorter of `{}` and three significant digits.
fn tick(value: &f64) -> String {
    let plain = format!("{value}");
    let short = super::metrics::trimmed(*value);
    if plain.len() <= short.len() { plain } else { short }
}

fn draw_content<X>(
    context: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, RangedCoordf64>>,
    chart: &Chart,
    has_data: bool,
) -> Result<(), Box<dyn Error>>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    context
        .configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(10)
        .y_labels(7)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;

    let x_range = context.x_range();
    if chart.zero_line {
        let zero = [(x_range.start, 0.0), (x_range.end, 0.0)];
        context.draw_series(DashedLineSeries::new(zero, 6, 4, BLACK.stroke_width(1)))?;
    }
    for line in &chart.lines {
        let color = RGBColor(line.color.0, line.color.1, line.color.2);
        for run in &line.runs {
            let run: Vec<&Point> = run.iter().filter(|point| usable(chart, point)).collect();
            let shaded: Vec<(f64, f64, f64)> = run
                .iter()
                .filter_map(|p| band(p).map(|(low, high)| (p.x, low, high)))
                .collect();
            if shaded.len() >= 2 {
                let outline: Vec<(f64, f64)> = shaded
                    .iter()
                    .map(|&(x, low, _)| (x, low))
                    .chain(shaded.iter().rev().map(|&(x, _, high)| (x, high)))
                    .collect();
                context.draw_series(std::iter::once(Polygon::new(outline, color.mix(0.18).filled())))?;
            }
            let estimate: Vec<(f64, f64)> = run.iter().map(|p| (p.x, p.y)).collect();
            if estimate.len() >= 2 {
                context.draw_series(LineSeries::new(estimate, color.stroke_width(2)))?;
            } else if let Some(&only) = estimate.first() {
                context.draw_series(std::iter::once(Circle::new(only, 3, color.filled())))?;
            }
        }
    }
    if !has_data {
        let y_range = context.y_range();
        let centre = if chart.log_x {
            (x_range.start * x_range.end).sqrt()
        } else {
            (x_range.start + x_range.end) / 2.0
        };
        let style = TextStyle::from((FONT, 22).into_font())
            .color(&RGBColor(110, 110, 110))
            .pos(Pos::new(HPos::Center, VPos::Center));
        let middle = (y_range.start + y_range.end) / 2.0;
        context.draw_series(std::iter::once(Text::new("no data yet", (centre, middle), style)))?;
    }
    Ok(())
}

/// One swatch and name per line, left to right.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    lines: &[Line],
) -> Result<(), Box<dyn Error>> {
    let mut x = 90;
    for line in lines {
        let color = RGBColor(line.color.0, line.color.1, line.color.2);
        area.draw(&Rectangle::new([(x, 8), (x + 22, 18)], color.mix(0.35).filled()))?;
        area.draw(&PathElement::new(vec![(x, 13), (x + 22, 13)], color.stroke_width(3)))?;
        let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(line.name.clone(), (x + 28, 13), style))?;
        // The backend's estimate of glyph widths, with room to spare: the browser's font may
        // be wider than plotters guesses.
        x += 28 + 9 * line.name.chars().count() as i32 + 28;
    }
    Ok(())
}
