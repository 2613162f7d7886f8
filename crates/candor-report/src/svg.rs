//! One reliability diagram as inline SVG: several signals overlaid (one colour and marker shape
//! each, with a legend), x = mean confidence of a bin, y = its accuracy, the Wilson interval as an
//! error bar, the diagonal of perfect calibration, and under the plot a strip of bars counting the
//! examples of each bin. Plain string building; every text is escaped.
//!
//! Coordinates: the plot square starts at ([`LEFT`], [`TOP`]) and is [`PLOT`] pixels wide, so a bin
//! at (confidence c, accuracy a) is drawn at `(LEFT + c·PLOT, TOP + (1 − a)·PLOT)`.

use super::html::escape;
use candor_calib::reliability::{ReliabilityBin, ReliabilityDiagram};
use std::fmt::Write;

/// Left edge of the plot square (room for tick labels and the y-axis title).
const LEFT: f64 = 58.0;
/// Top edge of the plot square (room for the legend above it).
const TOP: f64 = 30.0;
/// Approximate width of one legend character, to space the legend entries.
const LEGEND_CHARACTER_WIDTH: f64 = 6.0;
/// Side of the plot square, in pixels.
const PLOT: f64 = 320.0;
/// Room right of the plot.
const RIGHT: f64 = 18.0;
/// Top of the count strip (below the x tick labels).
const STRIP_TOP: f64 = TOP + PLOT + 28.0;
/// Height of the tallest count bar.
const STRIP_HEIGHT: f64 = 40.0;
/// Smallest drawn height of a non-empty count bar.
const MIN_BAR_HEIGHT: f64 = 1.5;
/// Total width and height.
const WIDTH: f64 = LEFT + PLOT + RIGHT;
const HEIGHT: f64 = STRIP_TOP + STRIP_HEIGHT + 30.0;
/// Axis ticks.
const TICKS: [f64; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
/// Colours of the series, in order (colour-blind safe: vermillion, blue, bluish green).
const COLOURS: [&str; 3] = ["#d55e00", "#0072b2", "#009e73"];

/// One signal's diagram to overlay.
pub struct Series<'a> {
    /// Signal name, shown in the legend.
    pub signal: &'a str,
    /// Its bins.
    pub diagram: &'a ReliabilityDiagram,
}

/// Horizontal pixel position of a confidence.
pub fn x_of(confidence: f64) -> f64 {
    LEFT + confidence * PLOT
}

/// Vertical pixel position of an accuracy.
pub fn y_of(accuracy: f64) -> f64 {
    TOP + (1.0 - accuracy) * PLOT
}

/// The diagram of `series` overlaid, titled `title` (for assistive technology and tooltips).
pub fn reliability_diagram(title: &str, series: &[Series<'_>]) -> String {
    let mut svg = format!(
        "<svg class=\"reliability\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         font-family=\"system-ui, sans-serif\" font-size=\"11\"><title>{}</title>\n",
        escape(title)
    );
    svg.push_str(&frame());
    for (index, s) in series.iter().enumerate() {
        svg.push_str(&points(s, index));
    }
    svg.push_str(&count_strip(series));
    if plotted_bins(series) == 0 {
        let _ = writeln!(
            svg,
            "<text x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"middle\" fill=\"#666\">no test examples</text>",
            x_of(0.5),
            y_of(0.5)
        );
    }
    svg.push_str(&legend(series));
    svg.push_str("</svg>");
    svg
}

fn colour(index: usize) -> &'static str {
    COLOURS[index % COLOURS.len()]
}

/// Bins drawn as points: non-empty, with a mean confidence and an accuracy.
fn plotted(diagram: &ReliabilityDiagram) -> impl Iterator<Item = (&ReliabilityBin, f64, f64)> {
    diagram.bins.iter().filter(|b| b.count > 0).filter_map(|b| Some((b, b.mean_confidence?, b.accuracy?)))
}

fn plotted_bins(series: &[Series<'_>]) -> usize {
    series.iter().map(|s| plotted(s.diagram).count()).sum()
}

/// Grid, axes with ticks 0, 0.2, …, 1 and their labels, axis titles and the diagonal.
fn frame() -> String {
    let mut svg = String::new();
    let (left, right, top, bottom) = (x_of(0.0), x_of(1.0), y_of(1.0), y_of(0.0));
    for tick in TICKS {
        let (x, y, label) = (x_of(tick), y_of(tick), format!("{tick}"));
        let (tick_end_y, tick_end_x) = (bottom + 4.0, left - 4.0);
        let (label_y, label_x, label_baseline) = (bottom + 16.0, left - 7.0, y + 4.0);
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.2}\" y1=\"{top:.2}\" x2=\"{x:.2}\" y2=\"{bottom:.2}\" stroke=\"#e6e6e6\"/>\
             <line x1=\"{left:.2}\" y1=\"{y:.2}\" x2=\"{right:.2}\" y2=\"{y:.2}\" stroke=\"#e6e6e6\"/>\
             <line x1=\"{x:.2}\" y1=\"{bottom:.2}\" x2=\"{x:.2}\" y2=\"{tick_end_y:.2}\" stroke=\"#333\"/>\
             <line x1=\"{tick_end_x:.2}\" y1=\"{y:.2}\" x2=\"{left:.2}\" y2=\"{y:.2}\" stroke=\"#333\"/>\
             <text x=\"{x:.2}\" y=\"{label_y:.2}\" text-anchor=\"middle\" class=\"tick\">{label}</text>\
             <text x=\"{label_x:.2}\" y=\"{label_baseline:.2}\" text-anchor=\"end\" class=\"tick\">{label}</text>"
        );
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{left:.2}\" y=\"{top:.2}\" width=\"{PLOT}\" height=\"{PLOT}\" fill=\"none\" stroke=\"#333\"/>\
         <line class=\"diagonal\" x1=\"{left:.2}\" y1=\"{bottom:.2}\" x2=\"{right:.2}\" y2=\"{top:.2}\" stroke=\"#888\" stroke-dasharray=\"5 4\"/>\
         <text x=\"14\" y=\"{:.2}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.2})\">accuracy in bin</text>\
         <text x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"middle\">mean confidence in bin</text>",
        y_of(0.5),
        y_of(0.5),
        x_of(0.5),
        HEIGHT - 8.0,
    );
    svg
}

/// A line through the points of one series, then per bin its error bar and marker.
fn points(series: &Series<'_>, index: usize) -> String {
    let colour = colour(index);
    let bins: Vec<_> = plotted(series.diagram).collect();
    let mut svg = String::new();
    if bins.len() > 1 {
        let path: Vec<String> = bins.iter().map(|&(_, c, a)| format!("{:.2},{:.2}", x_of(c), y_of(a))).collect();
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.2\" stroke-opacity=\"0.45\"/>",
            path.join(" ")
        );
    }
    for (bin, confidence, accuracy) in bins {
        svg.push_str(&error_bar(bin, confidence, colour));
        svg.push_str(&marker(series.signal, index, bin, confidence, accuracy));
    }
    svg
}

fn error_bar(bin: &ReliabilityBin, confidence: f64, colour: &str) -> String {
    let (Some(low), Some(high)) = (bin.ci_low, bin.ci_high) else {
        return String::new();
    };
    let (x, y_low, y_high) = (x_of(confidence), y_of(low), y_of(high));
    format!(
        "<path class=\"interval\" d=\"M{:.2} {y_low:.2}H{:.2}M{x:.2} {y_low:.2}V{y_high:.2}M{:.2} {y_high:.2}H{:.2}\" \
         stroke=\"{colour}\" stroke-width=\"1.2\" fill=\"none\"/>\n",
        x - 3.0,
        x + 3.0,
        x - 3.0,
        x + 3.0,
    )
}

/// A filled circle for the first series, a hollow square for the second, a diamond after that.
fn marker(signal: &str, index: usize, bin: &ReliabilityBin, confidence: f64, accuracy: f64) -> String {
    let colour = colour(index);
    let shape = match index {
        0 => format!("<circle r=\"4.2\" fill=\"{colour}\" stroke=\"#fff\" stroke-width=\"0.8\"/>"),
        1 => format!("<rect x=\"-3.8\" y=\"-3.8\" width=\"7.6\" height=\"7.6\" fill=\"#fff\" stroke=\"{colour}\" stroke-width=\"1.8\"/>"),
        _ => format!("<path d=\"M0 -5L5 0L0 5L-5 0Z\" fill=\"{colour}\"/>"),
    };
    format!(
        "<g class=\"point\" data-signal=\"{}\" transform=\"translate({:.2} {:.2})\"><title>{}</title>{shape}</g>\n",
        escape(signal),
        x_of(confidence),
        y_of(accuracy),
        escape(&bin_description(signal, bin)),
    )
}

fn bin_description(signal: &str, bin: &ReliabilityBin) -> String {
    let number = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
    format!(
        "{signal}: {} examples with confidence in [{}, {}], mean confidence {}, accuracy {} [{}, {}]",
        bin.count,
        number(bin.lower),
        number(bin.upper),
        number(bin.mean_confidence),
        number(bin.accuracy),
        number(bin.ci_low),
        number(bin.ci_high),
    )
}

/// Bars of the examples per bin under the x axis, the series side by side within each bin.
fn count_strip(series: &[Series<'_>]) -> String {
    let bottom = STRIP_TOP + STRIP_HEIGHT;
    let mut svg = format!(
        "<line x1=\"{:.2}\" y1=\"{bottom:.2}\" x2=\"{:.2}\" y2=\"{bottom:.2}\" stroke=\"#333\"/>\
         <text x=\"14\" y=\"{:.2}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.2})\">count</text>\n",
        x_of(0.0),
        x_of(1.0),
        bottom - STRIP_HEIGHT / 2.0,
        bottom - STRIP_HEIGHT / 2.0,
    );
    let largest = series.iter().flat_map(|s| s.diagram.bins.iter().map(|b| b.count)).max().unwrap_or(0);
    if largest == 0 {
        return svg;
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.2}\" y=\"{:.2}\" text-anchor=\"end\">{largest}</text>\
         <text x=\"{:.2}\" y=\"{bottom:.2}\" text-anchor=\"end\">0</text>",
        x_of(0.0) - 7.0,
        STRIP_TOP + 8.0,
        x_of(0.0) - 7.0,
    );
    for (index, s) in series.iter().enumerate() {
        for bin in s.diagram.bins.iter().filter(|b| b.count > 0) {
            svg.push_str(&count_bar(s.signal, index, series.len(), bin, largest));
        }
    }
    svg
}

fn count_bar(signal: &str, index: usize, n_series: usize, bin: &ReliabilityBin, largest: usize) -> String {
    let (Some(lower), Some(upper)) = (bin.lower, bin.upper) else {
        return String::new();
    };
    let slot = (x_of(upper) - x_of(lower)) / n_series as f64;
    // At least MIN_BAR_HEIGHT, so a bin of one example stays visible next to a bin of hundreds.
    let height = (STRIP_HEIGHT * bin.count as f64 / largest as f64).max(MIN_BAR_HEIGHT);
    format!(
        "<rect class=\"count\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{height:.2}\" fill=\"{}\" \
         fill-opacity=\"0.75\"><title>{}</title></rect>\n",
        x_of(lower) + index as f64 * slot + 0.5,
        STRIP_TOP + STRIP_HEIGHT - height,
        (slot - 1.0).max(0.5),
        colour(index),
        escape(&format!("{signal}: {} examples", bin.count)),
    )
}

/// The legend, a row above the plot: marker, signal name and examples per series.
fn legend(series: &[Series<'_>]) -> String {
    let mut svg = String::new();
    let (mut x, y) = (x_of(0.0), TOP - 10.0);
    for (index, s) in series.iter().enumerate() {
        let shape = match index {
            0 => format!("<circle cx=\"{:.2}\" cy=\"{:.2}\" r=\"4.2\" fill=\"{}\"/>", x + 5.0, y - 4.0, colour(index)),
            1 => format!(
                "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"7.6\" height=\"7.6\" fill=\"#fff\" stroke=\"{}\" stroke-width=\"1.8\"/>",
                x + 1.2,
                y - 7.8,
                colour(index)
            ),
            _ => format!("<path d=\"M{:.2} {:.2}l5 5l-5 5l-5 -5Z\" fill=\"{}\"/>", x + 5.0, y - 9.0, colour(index)),
        };
        let text = format!("{} (n = {})", s.signal, s.diagram.n_rows);
        let _ = writeln!(svg, "{shape}<text x=\"{:.2}\" y=\"{y:.2}\">{}</text>", x + 14.0, escape(&text));
        x += 30.0 + LEGEND_CHARACTER_WIDTH * text.chars().count() as f64;
    }
    svg
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{diagram, CALIBRATED_BINS, LOGITS_NONE_BINS, VERBALIZED_NONE_BINS};
    use super::*;

    fn translations(svg: &str) -> Vec<(f64, f64)> {
        svg.match_indices("class=\"point\"")
            .map(|(at, _)| {
                let rest = &svg[at..];
                let start = rest.find("translate(").unwrap() + "translate(".len();
                let end = start + rest[start..].find(')').unwrap();
                let (x, y) = rest[start..end].split_once(' ').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn one_marker_per_non_empty_bin_at_the_mapped_position() {
        let (verbalized, logits) = (diagram(&VERBALIZED_NONE_BINS), diagram(&LOGITS_NONE_BINS));
        let series = [Series { signal: "verbalized", diagram: &verbalized }, Series { signal: "logits", diagram: &logits }];
        let svg = reliability_diagram("none", &series);
        let points = translations(&svg);
        assert_eq!(points.len(), 5);
        // Plot square from x = 58 to 378 and y = 30 (accuracy 1) to 350 (accuracy 0):
        // (0.62, 0.5) → (58 + 0.62·320, 30 + 0.5·320) = (256.4, 190).
        assert_eq!(points[0], (256.4, 190.0));
        // (0.25, 0.3) → (58 + 80, 30 + 0.7·320) = (138, 254).
        assert_eq!(points[2], (138.0, 254.0));
        assert_eq!(svg.matches("class=\"count\"").count(), 5);
        assert_eq!(svg.matches("class=\"interval\"").count(), 5);
    }

    #[test]
    fn axes_have_ticks_from_0_to_1_and_labels() {
        let calibrated = diagram(&CALIBRATED_BINS);
        let svg = reliability_diagram("ts", &[Series { signal: "logits", diagram: &calibrated }]);
        for label in ["0", "0.2", "0.4", "0.6", "0.8", "1"] {
            assert_eq!(svg.matches(&format!("class=\"tick\">{label}</text>")).count(), 2, "tick {label}");
        }
        assert!(svg.contains("mean confidence in bin") && svg.contains("accuracy in bin"));
        // The largest bar (30 examples) spans the whole strip height; its label is the maximum.
        assert!(svg.contains(&format!("height=\"{STRIP_HEIGHT:.2}\"")));
        assert!(svg.contains(">30</text>"));
    }

    #[test]
    fn count_bars_are_proportional_with_a_visible_minimum() {
        let (verbalized, logits) = (diagram(&VERBALIZED_NONE_BINS), diagram(&LOGITS_NONE_BINS));
        let series = [Series { signal: "verbalized", diagram: &verbalized }, Series { signal: "logits", diagram: &logits }];
        let svg = reliability_diagram("none", &series);
        // Largest bin: 26 examples → 40 px; the bin of 4 → 40 · 4/26 = 6.15 px from the strip bottom
        // (30 + 320 + 28 + 40 = 418, so y = 411.85), starting at
        // 0.6 · 320 + 58 + 0.5 = 250.5 (first half of the bin: width 320/15/2 − 1 = 9.67).
        assert!(svg.contains("x=\"250.50\" y=\"411.85\" width=\"9.67\" height=\"6.15\""), "{svg}");
        let skewed = diagram(&[(0, 1, 0.05, 0.0, 0.0, 0.8), (14, 1000, 0.97, 0.9, 0.88, 0.92)]);
        let svg = reliability_diagram("none", &[Series { signal: "logits", diagram: &skewed }]);
        assert!(svg.contains(&format!("height=\"{MIN_BAR_HEIGHT:.2}\"")));
    }

    #[test]
    fn interval_ends_map_to_the_wilson_bounds() {
        let calibrated = diagram(&CALIBRATED_BINS);
        let svg = reliability_diagram("ts", &[Series { signal: "logits", diagram: &calibrated }]);
        // Bin at confidence 0.7 with interval [0.52, 0.83]: x = 58 + 224 = 282,
        // y(0.52) = 30 + 0.48·320 = 183.6, y(0.83) = 30 + 0.17·320 = 84.4.
        assert!(svg.contains("M282.00 183.60V84.40"), "{svg}");
    }

    #[test]
    fn an_empty_diagram_says_so_and_text_is_escaped() {
        let empty = diagram(&[]);
        let svg = reliability_diagram("a<b", &[Series { signal: "x&y", diagram: &empty }]);
        assert!(svg.contains("no test examples"));
        assert!(svg.contains("<title>a&lt;b</title>") && svg.contains("x&amp;y (n = 0)"));
        assert!(!svg.contains("class=\"point\""));
    }
}
