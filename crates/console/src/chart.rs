//! Charts drawn on the server as inline SVG: they need no script (the strict CSP allows
//! none) and read the same with JavaScript off. A stacked bar per time bucket, one colour
//! per series, a legend with each series' total, and a `<title>` per bar for its numbers.

use maud::{Markup, html};

use crate::backend::Series;

/// Colours for up to eight series (then they repeat), readable on white.
const COLOURS: &[&str] = &[
    "#2f6fb3", "#d9822b", "#3a9a5b", "#b8433b", "#7d5ba6", "#8c6d3f", "#c55ca0", "#5f7f8f",
];

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 18.0;

fn label_time(ms: i64, bucket_ms: i64) -> String {
    let Ok(t) = jiff::Timestamp::from_millisecond(ms) else {
        return String::new();
    };
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    if bucket_ms >= 86_400_000 {
        z.strftime("%m-%d").to_string()
    } else {
        z.strftime("%m-%d %H:%M").to_string()
    }
}

/// A stacked bar chart of `series` over `buckets` (start times, Unix ms), titled `title`.
pub fn stacked(title: &str, buckets: &[i64], bucket_ms: i64, series: &[Series]) -> Markup {
    let n = buckets.len().max(1);
    let totals: Vec<u64> = (0..n)
        .map(|i| {
            series
                .iter()
                .map(|s| s.counts.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let plot_w = WIDTH - LEFT;
    let plot_h = HEIGHT - BOTTOM;
    let bar_w = plot_w / n as f64;
    let scale = plot_h / max as f64;
    let all: u64 = totals.iter().sum();
    html! {
        figure.chart {
            figcaption { (title) " — " (all) " in total" }
            @if series.is_empty() || all == 0 {
                p.empty { "Nothing in this time range." }
            } @else {
                svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
                    role="img" aria-label=(format!("{title}: {all} in total")) {
                    line x1=(LEFT) y1=(plot_h) x2=(WIDTH) y2=(plot_h) stroke="#999" {}
                    text x=(LEFT - 4.0) y="10" text-anchor="end" font-size="10" { (max) }
                    text x=(LEFT - 4.0) y=(plot_h) text-anchor="end" font-size="10" { "0" }
                    @for (i, start) in buckets.iter().enumerate() {
                        @let x = LEFT + i as f64 * bar_w;
                        @let mut y = plot_h;
                        @for (si, s) in series.iter().enumerate() {
                            @let c = s.counts.get(i).copied().unwrap_or(0);
                            @if c > 0 {
                                @let h = c as f64 * scale;
                                @let top = { y -= h; y };
                                rect x=(format!("{x:.1}")) y=(format!("{top:.1}"))
                                    width=(format!("{:.1}", (bar_w - 1.0).max(1.0)))
                                    height=(format!("{h:.1}")) fill=(COLOURS[si % COLOURS.len()]) {
                                    title { (label_time(*start, bucket_ms)) " " (s.name) ": " (c) }
                                }
                            }
                        }
                    }
                    @for (i, anchor) in [(0, "start"), (n / 2, "middle"), (n.saturating_sub(1), "end")] {
                        @if let Some(start) = buckets.get(i) {
                            @let x = if anchor == "end" { WIDTH } else { LEFT + i as f64 * bar_w };
                            text x=(format!("{x:.1}")) y=(HEIGHT - 4.0) text-anchor=(anchor)
                                font-size="10" { (label_time(*start, bucket_ms)) }
                        }
                    }
                }
                ul.legend {
                    @for (si, s) in series.iter().enumerate() {
                        li {
                            svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" aria-hidden="true" {
                                rect width="10" height="10" fill=(COLOURS[si % COLOURS.len()]) {}
                            }
                            " " (s.name) " (" (s.counts.iter().sum::<u64>()) ")"
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_and_names_are_escaped() {
        let s = vec![
            Series {
                name: "<script>x</script>".into(),
                counts: vec![1, 0, 3],
            },
            Series {
                name: "b".into(),
                counts: vec![2, 0, 0],
            },
        ];
        let svg = stacked("t", &[0, 3_600_000, 7_200_000], 3_600_000, &s).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
        assert_eq!(
            svg.matches("<rect").count(),
            3 + 2,
            "3 bars + 2 legend swatches"
        );
        assert!(svg.contains("6 in total"));
        let empty = stacked("t", &[0], 1, &[]).into_string();
        assert!(empty.contains("Nothing in this time range"));
    }
}
