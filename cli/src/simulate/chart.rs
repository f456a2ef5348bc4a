//! Charts of a run (and of a matrix) with `plotters`, as PNG and SVG.
//!
//! One drawing function per chart, generic over the backend, so the PNG and the SVG are the
//! same picture. PNG text needs glyphs: instead of depending on the machine's fonts (plotters'
//! default goes through fontconfig and FreeType, which a fresh CI image may lack), DejaVu Sans
//! is compiled into the binary (`assets/fonts`, Bitstream Vera licence) and drawn with the pure
//! Rust `ab_glyph` rasteriser. The SVG names the same family and leaves drawing to the viewer.
//!
//! Latency goes on a log axis: a breaker's fallback takes a millisecond and a hang takes
//! seconds, and a linear axis would flatten the first to nothing.

use super::recording::{Seen, Series, Window, BREAKERS};
use anyhow::anyhow;
use plotters::coord::combinators::{LogCoord, WithKeyPoints};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::OnceLock;

const FONT: &str = "sans-serif";
const WIDTH: u32 = 1400;
/// Left label area of every panel: the same for all, so their time axes line up.
const LABEL_AREA: u32 = 170;

const FAULT_SHADE: RGBColor = RGBColor(255, 214, 214);
const OPEN: RGBColor = RGBColor(214, 39, 40);
const HALF_OPEN: RGBColor = RGBColor(255, 170, 0);
const CLOSED: RGBColor = RGBColor(170, 215, 170);
const AVAILABILITY: RGBColor = RGBColor(31, 119, 180);
const COMPLETED: RGBColor = RGBColor(140, 140, 140);
const P99: RGBColor = RGBColor(214, 39, 40);
const P50: RGBColor = RGBColor(31, 119, 180);
/// One colour per matrix row: none, timeouts, +breakers, +retries, +retries with a budget.
const SETUP_COLOURS: [RGBColor; 5] = [
    RGBColor(120, 120, 120),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

/// Registers the vendored font once per process.
fn font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the vendored DejaVu Sans font could not be read"))
    }
}

/// Draws one picture twice, as `<stem>.png` and `<stem>.svg`: `$draw` is called with a drawing
/// area of each backend (a macro because the backends are different types).
macro_rules! png_and_svg {
    ($stem:expr, $size:expr, |$area:ident| $draw:expr) => {{
        font()?;
        let png = $stem.with_extension("png");
        let svg = $stem.with_extension("svg");
        let $area = BitMapBackend::new(&png, $size).into_drawing_area();
        $draw.map_err(|e| anyhow!("drawing {}: {e}", png.display()))?;
        let $area = SVGBackend::new(&svg, $size).into_drawing_area();
        $draw.map_err(|e| anyhow!("drawing {}: {e}", svg.display()))?;
        Ok(())
    }};
}

/// Writes `<stem>.png` and `<stem>.svg` of one run.
pub fn run_chart(stem: &Path, title: &str, series: &Series, duration_s: f64) -> anyhow::Result<()> {
    png_and_svg!(stem, (WIDTH, 900), |area| draw_run(
        area, title, series, duration_s
    ))
}

/// Writes `<stem>.png` and `<stem>.svg` comparing the runs of a matrix. `caller` is the
/// breaker whose owner calls the faulty service: its calls per second get a panel of their own.
pub fn matrix_chart(
    stem: &Path,
    title: &str,
    runs: &[(String, &Series)],
    duration_s: f64,
    caller: Option<usize>,
) -> anyhow::Result<()> {
    let height = if caller.is_some() { 1130 } else { 800 };
    png_and_svg!(stem, (WIDTH, height), |area| draw_matrix(
        area, title, runs, duration_s, caller
    ))
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// The y range of a latency axis that shows every value in `values`.
fn latency_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return (0.1, 10.0);
    }
    ((lo / 2.0).max(0.05), (hi * 2.0).max(lo * 10.0))
}

fn ms_label(v: &f64) -> String {
    if *v >= 1000.0 {
        format!("{} s", v / 1000.0)
    } else if *v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A step per second (the value holds over the whole second it was measured in), skipping
/// seconds without a value.
fn per_second(
    series: &Series,
    value: impl Fn(&super::recording::Second) -> Option<f64>,
) -> Vec<(f64, f64)> {
    series
        .seconds
        .iter()
        .filter_map(|s| value(s).map(|v| (s.second as f64, v)))
        .flat_map(|(x, v)| [(x, v), (x + 1.0, v)])
        .collect()
}

/// Breaker `i`'s states as spans: each sample holds until the next one. A sample that is
/// not followed by another within a second (a failed poll) holds for at most a second.
fn state_spans(series: &Series, i: usize, duration_s: f64) -> Vec<(f64, f64, Seen)> {
    let samples: Vec<_> = series.samples.iter().filter(|s| s.breaker == i).collect();
    let mut spans: Vec<(f64, f64, Seen)> = Vec::new();
    for (k, sample) in samples.iter().enumerate() {
        let from = sample.at.as_secs_f64();
        if from >= duration_s {
            break;
        }
        let next = samples
            .get(k + 1)
            .map_or(duration_s, |n| n.at.as_secs_f64());
        let to = next.min(from + 1.0).min(duration_s);
        match spans.last_mut() {
            // Merge runs of one state into one rectangle (a smaller SVG, no seams).
            Some(last) if last.2 == sample.state && (last.1 - from).abs() < 1e-9 => last.1 = to,
            _ => spans.push((from, to, sample.state)),
        }
    }
    spans
}

fn fault_rect(fault: Window, y0: f64, y1: f64) -> Rectangle<(f64, f64)> {
    Rectangle::new(
        [(fault.start_s, y0), (fault.end_s, y1)],
        FAULT_SHADE.filled(),
    )
}

fn legend_box(colour: RGBColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 7), (x + 18, y + 7)], colour.filled())
}

fn legend_line(colour: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], colour.stroke_width(3))
}
/// The series' legend, boxed on white, in one corner: the same on every chart.
fn series_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .position(at)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
}

/// White background and a title band; returns the area below the title.
fn titled<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (band, rest) = root.split_vertically(56);
    let (w, h) = band.dim_in_pixel();
    let style = TextStyle::from((FONT, 24).into_font())
        .pos(Pos::new(HPos::Center, VPos::Center))
        .color(&BLACK);
    band.draw(&Text::new(
        title.to_string(),
        (w as i32 / 2, h as i32 / 2),
        style,
    ))?;
    Ok(rest)
}

/// Text centred vertically on its anchor.
fn label_style(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center))
        .color(&BLACK)
}

/// Whole seconds on the time axis, whole percents on the availability axis.
fn whole(v: &f64) -> String {
    format!("{v:.0}")
}

/// 1-2-5 ticks inside `lo..hi`: a log axis with a label every step, not just every decade.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
        decade *= 10.0;
    }
    ticks
}

type Plane<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The availability panel's axes (0–105 %, whole seconds) with the fault window shaded: the
/// same in a run's chart and in the matrix chart.
fn availability_axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    duration_s: f64,
    fault: Window,
) -> Result<Plane<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(area)
        .margin_left(15)
        .margin_right(30)
        .margin_top(10)
        .x_label_area_size(45)
        .y_label_area_size(LABEL_AREA)
        .build_cartesian_2d(0f64..duration_s, 0f64..105f64)?;
    chart
        .configure_mesh()
        .y_desc("availability (%)")
        .y_label_formatter(&whole)
        .x_desc("time (s)")
        .x_label_formatter(&whole)
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart
        .draw_series(std::iter::once(fault_rect(fault, 0.0, 105.0)))?
        .label("fault window")
        .legend(legend_box(FAULT_SHADE));
    Ok(chart)
}

type LogPlane<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<RangedCoordf64, WithKeyPoints<LogCoord<f64>>>>;

/// A latency panel's axes (log milliseconds from `lo` to `hi`, whole seconds) with the fault
/// window shaded: the same in a run's chart and in the matrix chart.
fn latency_axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    y_desc: &str,
    duration_s: f64,
    (lo, hi): (f64, f64),
    fault: Window,
) -> Result<LogPlane<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(area)
        .margin_left(15)
        .margin_right(30)
        .margin_top(10)
        .margin_bottom(5)
        .x_label_area_size(45)
        .y_label_area_size(LABEL_AREA)
        .build_cartesian_2d(
            0f64..duration_s,
            (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
        )?;
    chart
        .configure_mesh()
        .y_desc(y_desc)
        .x_desc("time (s)")
        .x_label_formatter(&whole)
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .y_label_formatter(&ms_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart
        .draw_series(std::iter::once(fault_rect(fault, lo, hi)))?
        .label("fault window")
        .legend(legend_box(FAULT_SHADE));
    Ok(chart)
}

fn draw_run<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    series: &Series,
    duration_s: f64,
) -> DrawResult<DB> {
    let root = titled(root, title)?;
    let (top, rest) = root.split_vertically(330);
    let (middle, bottom) = rest.split_vertically(330);
    let (legend, bottom) = bottom.split_vertically(30);
    let fault = series.fault;

    // Availability.
    let mut chart = availability_axes(&top, duration_s, fault)?;
    chart
        .draw_series(LineSeries::new(
            per_second(series, |s| {
                let n = s.requests();
                (n > 0).then(|| 100.0 * s.count(super::recording::Class::Ok) as f64 / n as f64)
            }),
            COMPLETED.stroke_width(2),
        ))?
        .label("completed, whole chain (%)")
        .legend(legend_line(COMPLETED));
    chart
        .draw_series(LineSeries::new(
            per_second(series, |s| s.availability_pct()),
            AVAILABILITY.stroke_width(3),
        ))?
        .label("availability: completed or fallback (%)")
        .legend(legend_line(AVAILABILITY));
    series_legend(&mut chart, SeriesLabelPosition::LowerLeft)?;

    // Latency.
    let (lo, hi) = latency_range(
        series
            .seconds
            .iter()
            .flat_map(|s| [s.percentile_ms(0.5), s.percentile_ms(0.99)])
            .flatten(),
    );
    let mut chart = latency_axes(&middle, "latency (ms, log)", duration_s, (lo, hi), fault)?;
    chart
        .draw_series(LineSeries::new(
            per_second(series, |s| s.percentile_ms(0.5)),
            P50.stroke_width(2),
        ))?
        .label("p50 per second")
        .legend(legend_line(P50));
    chart
        .draw_series(LineSeries::new(
            per_second(series, |s| s.percentile_ms(0.99)),
            P99.stroke_width(3),
        ))?
        .label("p99 per second")
        .legend(legend_line(P99));
    series_legend(&mut chart, SeriesLabelPosition::UpperRight)?;

    // Breaker states: one strip per breaker.
    let mut chart = ChartBuilder::on(&bottom)
        .margin_left(15)
        .margin_right(30)
        .margin_top(10)
        .margin_bottom(5)
        .x_label_area_size(45)
        .y_label_area_size(LABEL_AREA)
        .build_cartesian_2d(0f64..duration_s, 0f64..2f64)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .x_label_formatter(&whole)
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .y_labels(5)
        .y_label_formatter(&|v| {
            let row = (v - 0.5).round();
            if (v - 0.5 - row).abs() > 0.01 {
                return String::new();
            }
            // Row 1 (top) is the first breaker in the chain.
            match row as i64 {
                1 => BREAKERS[0].replace("->", " → "),
                0 => BREAKERS[1].replace("->", " → "),
                _ => String::new(),
            }
        })
        .disable_y_mesh()
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, _) in BREAKERS.iter().enumerate() {
        let y0 = (BREAKERS.len() - 1 - i) as f64 + 0.15;
        let y1 = y0 + 0.7;
        chart.draw_series(state_spans(series, i, duration_s).into_iter().map(
            |(from, to, state)| {
                let colour = match state {
                    Seen::Closed => CLOSED,
                    Seen::HalfOpen => HALF_OPEN,
                    Seen::Open => OPEN,
                };
                Rectangle::new([(from, y0), (to, y1)], colour.filled())
            },
        ))?;
    }
    chart.draw_series(std::iter::once(Rectangle::new(
        [(fault.start_s, 0.0), (fault.end_s, 2.0)],
        BLACK.stroke_width(2),
    )))?;
    // The strip is full of data: its legend goes in a line of its own above it.
    let (mut x, y) = (LABEL_AREA as i32 + 15, 14);
    for (name, colour, filled) in [
        ("breaker states (sampled):", WHITE, None),
        ("closed", CLOSED, Some(true)),
        ("half-open", HALF_OPEN, Some(true)),
        ("open", OPEN, Some(true)),
        ("fault window", BLACK, Some(false)),
    ] {
        if let Some(filled) = filled {
            let style = if filled {
                colour.filled()
            } else {
                colour.stroke_width(2)
            };
            legend.draw(&Rectangle::new([(x, y - 8), (x + 20, y + 8)], style))?;
            x += 28;
        }
        let text = Text::new(name.to_string(), (x, y), label_style(15));
        legend.draw(&text)?;
        let (w, _) = legend.estimate_text_size(name, &label_style(15))?;
        x += w as i32 + 24;
    }
    root.present()
}

fn draw_matrix<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    runs: &[(String, &Series)],
    duration_s: f64,
    caller: Option<usize>,
) -> DrawResult<DB> {
    let root = titled(root, title)?;
    let (top, bottom) = root.split_vertically(370);
    let (bottom, calls) = bottom.split_vertically(370);
    let fault = runs.first().map(|(_, s)| s.fault).unwrap_or(Window {
        start_s: 0.0,
        end_s: 0.0,
    });
    let colour = |i: usize| SETUP_COLOURS[i % SETUP_COLOURS.len()];

    let mut chart = availability_axes(&top, duration_s, fault)?;
    for (i, (label, series)) in runs.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(
                per_second(series, |s| s.availability_pct()),
                colour(i).stroke_width(3),
            ))?
            .label(label.as_str())
            .legend(legend_line(colour(i)));
    }
    series_legend(&mut chart, SeriesLabelPosition::LowerLeft)?;

    let (lo, hi) = latency_range(
        runs.iter()
            .flat_map(|(_, s)| s.seconds.iter().filter_map(|s| s.percentile_ms(0.99))),
    );
    let mut chart = latency_axes(
        &bottom,
        "p99 latency (ms, log)",
        duration_s,
        (lo, hi),
        fault,
    )?;
    for (i, (label, series)) in runs.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(
                per_second(series, |s| s.percentile_ms(0.99)),
                colour(i).stroke_width(3),
            ))?
            .label(format!("p99 {label}"))
            .legend(legend_line(colour(i)));
    }
    series_legend(&mut chart, SeriesLabelPosition::UpperRight)?;

    // What the sick service felt: calls per second from its caller, retries included.
    if let Some(i) = caller {
        let callee = BREAKERS[i].split("->").nth(1).unwrap_or("the next hop");
        let most = runs
            .iter()
            .flat_map(|(_, s)| s.seconds.iter().map(|s| s.calls[i]))
            .max()
            .unwrap_or(0);
        let mut chart = ChartBuilder::on(&calls)
            .margin_left(15)
            .margin_right(30)
            .margin_top(10)
            .margin_bottom(5)
            .x_label_area_size(45)
            .y_label_area_size(LABEL_AREA)
            .build_cartesian_2d(0f64..duration_s, 0f64..(most as f64 * 1.15).max(1.0))?;
        chart
            .configure_mesh()
            .y_desc(format!("calls/s reaching {callee}"))
            .x_desc("time (s)")
            .x_label_formatter(&whole)
            .y_label_formatter(&whole)
            .axis_desc_style((FONT, 18))
            .label_style((FONT, 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart
            .draw_series(std::iter::once(fault_rect(fault, 0.0, most as f64 * 1.15)))?
            .label("fault window")
            .legend(legend_box(FAULT_SHADE));
        for (j, (label, series)) in runs.iter().enumerate() {
            chart
                .draw_series(LineSeries::new(
                    per_second(series, |s| Some(s.calls[i] as f64)),
                    colour(j).stroke_width(3),
                ))?
                .label(format!("calls {label}"))
                .legend(legend_line(colour(j)));
        }
        series_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    root.present()
}
