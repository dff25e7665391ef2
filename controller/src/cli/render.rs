//! What `weir status` prints: a table like `kubectl get`, and the detail view of one Rollout.
//! Pure: text from status and Events.

use crate::decide::percent;
use crate::status::{RolloutStatus, SideValues};

/// One row of the table.
pub struct Row<'a> {
    /// The namespace.
    pub namespace: &'a str,
    /// The Rollout.
    pub name: &'a str,
    /// Its status.
    pub status: &'a RolloutStatus,
}

/// The table, with a NAMESPACE column when `all_namespaces`.
pub fn table(rows: &[Row<'_>], all_namespaces: bool) -> String {
    let mut lines = vec![{
        let mut header = vec!["NAME", "PHASE", "STEP", "WEIGHT", "MESSAGE"];
        if all_namespaces {
            header.insert(0, "NAMESPACE");
        }
        header.iter().map(ToString::to_string).collect::<Vec<_>>()
    }];
    for row in rows {
        let mut cells = vec![
            row.name.to_owned(),
            format!("{:?}", row.status.phase),
            (row.status.step + 1).to_string(),
            percent(row.status.candidate_weight),
            row.status.message.clone(),
        ];
        if all_namespaces {
            cells.insert(0, row.namespace.to_owned());
        }
        lines.push(cells);
    }
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i + 1 == columns {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

fn side(name: &str, values: &SideValues) -> String {
    let ratio = values.error_ratio.map_or("-".to_owned(), |r| format!("{:.4}", r));
    let p99 = values.p99_ms.map_or("-".to_owned(), |p| format!("{p:.0}ms"));
    format!(
        "  {name:<10} requests {:>8}   errors {:>6}   error ratio {ratio:>7}   p99 {p99:>7}\n",
        values.requests, values.errors
    )
}

/// The detail view of one Rollout: where it is, both sides' numbers, the evidence against
/// the candidate and the requests still needed, then the latest Events.
pub fn detail(namespace: &str, name: &str, status: &RolloutStatus, events: &[String]) -> String {
    let mut out = format!("Rollout {namespace}/{name}\n");
    out.push_str(&format!("  phase      {:?}\n", status.phase));
    out.push_str(&format!(
        "  step       {}   weight {}\n",
        status.step + 1,
        percent(status.candidate_weight)
    ));
    if let Some(revision) = &status.candidate_revision {
        out.push_str(&format!(
            "  revisions  stable {}   candidate {revision}\n",
            status.stable_revision.as_deref().unwrap_or("-")
        ));
    }
    if let Some(stage) = &status.promotion {
        out.push_str(&format!("  promotion  {stage:?}\n"));
    }
    if let Some(surge) = status.max_surge {
        let full = status.stable_replicas.unwrap_or_default();
        let now = status.stable_scaled_to.unwrap_or(full);
        out.push_str(&format!(
            "  stable     {now} of {full} replicas (maxSurge {surge}: the fleet within {})\n",
            full + surge
        ));
    }
    out.push_str(&format!("  message    {}\n", status.message));
    if let Some(analysis) = &status.last_analysis {
        let v = &analysis.values;
        out.push_str(&format!(
            "\nLast analysis: {:?}{} ({})\n",
            analysis.verdict,
            if analysis.judged { "" } else { ", shown not judged" },
            analysis.reason
        ));
        out.push_str(&side("stable", &v.stable));
        out.push_str(&side("candidate", &v.candidate));
        out.push_str(&format!(
            "  evidence against the candidate: errors {:.2}, latency {:.2}, first byte {:.2} (abort at {:.0})\n",
            v.error_evidence, v.latency_evidence, v.first_byte_evidence, v.threshold
        ));
        if let Some(power) = &v.power {
            let still = power.needed.saturating_sub(power.requests);
            out.push_str(&format!(
                "  power: {} candidate requests of {} needed against {}{}\n",
                power.requests,
                power.needed,
                power.against,
                if still > 0 {
                    format!(" ({still} still needed)")
                } else {
                    String::new()
                }
            ));
        }
    }
    if !status.conditions.is_empty() {
        out.push_str("\nConditions:\n");
        for c in &status.conditions {
            out.push_str(&format!(
                "  {:<12} {:<7} {}: {}\n",
                c.type_, c.status, c.reason, c.message
            ));
        }
    }
    if !events.is_empty() {
        out.push_str("\nEvents:\n");
        for e in events {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Phase;

    #[test]
    fn the_table_lines_up_like_kubectl_get() {
        let status = RolloutStatus {
            phase: Phase::Progressing,
            step: 1,
            candidate_weight: 2500,
            message: "step 2/3 at 25%".into(),
            ..RolloutStatus::default()
        };
        let text = table(
            &[Row {
                namespace: "models",
                name: "sentiment",
                status: &status,
            }],
            true,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{text}");
        assert!(lines[1].contains("Progressing") && lines[1].contains("25%"), "{text}");
        assert_eq!(lines[0].find("PHASE"), lines[1].find("Progressing"), "{text}");
    }

    #[test]
    fn the_detail_shows_the_promotion_stage_and_stable_under_a_gpu_budget() {
        let status = RolloutStatus {
            phase: Phase::Promoting,
            promotion: Some(crate::status::PromotionStage::GrowingStable),
            max_surge: Some(1),
            stable_replicas: Some(3),
            stable_scaled_to: Some(2),
            ..RolloutStatus::default()
        };
        let text = detail("models", "sentiment", &status, &[]);
        assert!(text.contains("promotion  GrowingStable"), "{text}");
        assert!(
            text.contains("stable     2 of 3 replicas (maxSurge 1: the fleet within 4)"),
            "{text}"
        );
    }
}
