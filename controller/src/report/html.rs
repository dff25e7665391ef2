//! The report as one self-contained HTML page: inline CSS, inline SVG, no script, nothing
//! fetched. Heading, the table of [`super::table`], the verdict, then the four figures of
//! [`super::figures`]. Every piece of text from the status is escaped. No I/O.

use crate::experiment::status::ExperimentStatus;
use crate::experiment::verdict::{Outcome, Significance};

use super::markup::escape;
use super::table::{self, Align, Grid};
use super::{figures, plot};

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px 40px; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.5em; margin: 0 0 4px; }
p.plan { color: #555; margin: 0 0 16px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin-bottom: 12px; }
table { font-size: 14px; }
th, td { padding: 5px 10px; border-bottom: 1px solid #ddd; white-space: nowrap; vertical-align: top; }
th { text-align: left; background: #f4f4f6; font-weight: 600; }
thead th { white-space: normal; vertical-align: bottom; }
td.better, td.worse, td.unclear { white-space: normal; }
td.right { text-align: right; }
td.better { color: #1e7b34; }
td.worse { color: #b3261e; }
td.unclear { color: #555; }
span.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border-radius: 2px; }
p.verdict { font-size: 1.15em; padding: 8px 12px; border-radius: 4px; display: inline-block; }
p.verdict.winner { background: #e6f4ea; border: 1px solid #1e7b34; }
p.verdict.inconclusive { background: #fff8e1; border: 1px solid #b28704; }
figure { margin: 20px 0; }
svg.chart { max-width: 100%; height: auto; border: 1px solid #eee; }
";

/// The page for experiment `name`.
pub fn page(name: &str, experiment: &ExperimentStatus) -> String {
    let title = escape(&format!("weir report: {name}"));
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    out.push_str(&format!(
        "<p class=\"plan\">{}</p>\n",
        escape(&table::heading(name, experiment))
    ));
    out.push_str(&grid_table(&table::grid(experiment)));
    let kind = match experiment.verdict.as_ref().map(|v| &v.outcome) {
        Some(Outcome::Winner { .. }) => "winner",
        _ => "inconclusive",
    };
    out.push_str(&format!(
        "<p class=\"verdict {kind}\">{}</p>\n",
        escape(&table::verdict_line(experiment))
    ));
    let charts = [
        figures::latency_cdf(experiment),
        figures::error_ratio(experiment),
        figures::score(experiment),
        figures::differences(experiment),
    ];
    for chart in &charts {
        out.push_str("<figure>\n");
        out.push_str(&plot::svg(chart));
        out.push_str("</figure>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// The grid as an HTML table; the arm's cell carries its colour in the figures.
fn grid_table(grid: &Grid) -> String {
    let mut out = String::from("<table>\n<thead><tr>");
    for column in &grid.columns {
        out.push_str(&format!("<th scope=\"col\">{}</th>", escape(&column.header)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for (index, row) in grid.rows.iter().enumerate() {
        out.push_str("<tr>");
        for (position, (column, cell)) in grid.columns.iter().zip(row).enumerate() {
            if position == 0 {
                let (red, green, blue) = figures::color(index);
                out.push_str(&format!(
                    "<th scope=\"row\"><span class=\"swatch\" style=\"background: rgb({red}, {green}, {blue})\"></span>{}</th>",
                    escape(&cell.text)
                ));
                continue;
            }
            let class = match (cell.significance, column.align) {
                (Some(Significance::Better), _) => "better",
                (Some(Significance::Worse), _) => "worse",
                (Some(Significance::Unclear), _) => "unclear",
                (None, Align::Right) => "right",
                (None, Align::Left) => "left",
            };
            // A narrow window wraps an interval cell between estimate, interval and word, never
            // inside the interval.
            let text = escape(&cell.text).replace(", ", ",\u{a0}");
            out.push_str(&format!("<td class=\"{class}\">{text}</td>"));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}
