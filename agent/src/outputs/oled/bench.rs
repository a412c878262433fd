//! `nodewatch-agent bench-display`: time to draw and diff each page on this machine,
//! and the bytes an update sends over I2C (full frame against a one-figure change),
//! counted on a bus that goes nowhere.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use nodewatch_display::{Frame, Page, PanelSize, Point, Screen, ViewModel, draw_screen};

use super::panel::{NullI2c, Panel, ShowOutcome};

/// Figures for one page on one panel size.
#[derive(Debug, Clone)]
pub struct PageTiming {
    /// The page (`critical` for the takeover).
    pub page: String,
    /// The panel.
    pub size: PanelSize,
    /// Mean time to clear and draw the frame.
    pub render: Duration,
    /// Mean time to diff it against the previous frame.
    pub diff: Duration,
}

/// I2C bytes per update on one panel size.
#[derive(Debug, Clone, Copy)]
pub struct I2cBytes {
    /// The panel.
    pub size: PanelSize,
    /// A full frame after initialisation (init commands included).
    pub full: u64,
    /// A one-figure change: CPU 12% → 17% on the system page.
    pub one_figure: u64,
    /// The same frame again.
    pub unchanged: u64,
}

fn screens() -> Vec<(String, Screen)> {
    let mut screens: Vec<(String, Screen)> = Page::ALL
        .iter()
        .map(|p| {
            (
                p.name().to_string(),
                Screen::Page {
                    page: *p,
                    shift: Point::zero(),
                    dim: false,
                },
            )
        })
        .collect();
    screens.push((
        "critical".into(),
        Screen::Critical {
            name: "BuilderDown".into(),
            inverted: true,
            shift: Point::zero(),
        },
    ));
    screens
}

/// Times every page `iterations` times on both sizes.
pub fn time_pages(iterations: u32) -> Vec<PageTiming> {
    let iterations = iterations.max(1);
    let model = ViewModel::sample();
    let mut out = Vec::new();
    for size in [PanelSize::W128H64, PanelSize::W128H32] {
        for (name, screen) in screens() {
            let mut frame = Frame::new(size);
            let mut previous = Frame::new(size);
            let started = Instant::now();
            for _ in 0..iterations {
                frame.clear();
                let Ok(()) = draw_screen(&mut frame, &screen, &model);
            }
            let render = started.elapsed() / iterations;
            let started = Instant::now();
            let mut changed = 0u32;
            for i in 0..iterations {
                previous.set_pixel(i % 128, 0, i % 2 == 0);
                changed += frame.changed_area(&previous).map_or(0, |a| a.bytes());
            }
            let diff = started.elapsed() / iterations;
            std::hint::black_box(changed);
            out.push(PageTiming {
                page: name,
                size,
                render,
                diff,
            });
        }
    }
    out
}

fn bytes_of(outcome: ShowOutcome) -> u64 {
    match outcome {
        ShowOutcome::Full { bytes } | ShowOutcome::Partial { bytes } => bytes,
        ShowOutcome::Unchanged | ShowOutcome::BackingOff => 0,
    }
}

/// Bytes per update for both sizes.
pub fn i2c_bytes() -> Vec<I2cBytes> {
    let screen = Screen::Page {
        page: Page::System,
        shift: Point::zero(),
        dim: false,
    };
    let mut model = ViewModel::sample();
    [PanelSize::W128H64, PanelSize::W128H32]
        .into_iter()
        .map(|size| {
            let mut panel = Panel::new(NullI2c, 1, 0x3C, size, false);
            let now = Instant::now();
            let mut frame = Frame::new(size);
            model.cpu_percent = Some(12.0);
            let Ok(()) = draw_screen(&mut frame, &screen, &model);
            let full = panel.show(&frame, false, now).map(bytes_of).unwrap_or(0);
            let unchanged = panel.show(&frame, false, now).map(bytes_of).unwrap_or(0);
            model.cpu_percent = Some(17.0);
            frame.clear();
            let Ok(()) = draw_screen(&mut frame, &screen, &model);
            let one_figure = panel.show(&frame, false, now).map(bytes_of).unwrap_or(0);
            I2cBytes {
                size,
                full,
                one_figure,
                unchanged,
            }
        })
        .collect()
}

/// The report printed by `bench-display`.
pub fn report(iterations: u32) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "nodewatch display benchmark: mean of {iterations} runs per page, sample state"
    );
    let _ = writeln!(
        text,
        "{:<8} {:<10} {:>10} {:>10}",
        "panel", "page", "render µs", "diff µs"
    );
    for t in time_pages(iterations) {
        let _ = writeln!(
            text,
            "{:<8} {:<10} {:>10.1} {:>10.2}",
            t.size.name(),
            t.page,
            t.render.as_secs_f64() * 1e6,
            t.diff.as_secs_f64() * 1e6
        );
    }
    let _ = writeln!(text, "\nI2C bytes per update (commands + display memory):");
    for b in i2c_bytes() {
        let _ = writeln!(
            text,
            "{:<8} full frame (with init) {:>5}   one-figure change (CPU 12% -> 17%) {:>4}   unchanged {}",
            b.size.name(),
            b.full,
            b.one_figure,
            b.unchanged
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_figure_change_is_a_small_fraction_of_a_full_frame() {
        for b in i2c_bytes() {
            let memory = 128 * u64::from(b.size.pages());
            assert!(b.full > memory, "{b:?}");
            assert!(b.one_figure > 0 && b.one_figure * 10 < b.full, "{b:?}");
            assert_eq!(b.unchanged, 0);
        }
    }

    #[test]
    fn report_lists_every_page() {
        let text = report(2);
        for p in Page::ALL {
            assert!(text.contains(p.name()), "{text}");
        }
        assert!(text.contains("critical"));
    }
}
