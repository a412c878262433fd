//! Golden images: every page on both panel sizes, from the built-in sample state, plus
//! the states that matter (alerts firing, stale data, the critical takeover). The PNGs
//! under `tests/golden/` are shown in docs/display.md; `UPDATE_GOLDEN=1 cargo test -p
//! nodewatch-display --test golden` rewrites them after a deliberate change.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use embedded_graphics::geometry::Point;
use nodewatch_display::{
    Alert, Frame, Page, PanelSize, Screen, Severity, Source, ViewModel, draw_screen,
};

/// Golden images are stored at ×4, as `/display.png` serves them.
const SCALE: u32 = 4;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn page(page: Page) -> Screen {
    Screen::Page {
        page,
        shift: Point::zero(),
        dim: false,
    }
}

fn alerting() -> ViewModel {
    let mut m = ViewModel::sample();
    m.alerts = vec![
        Alert {
            name: "BuilderDown".into(),
            severity: Severity::Critical,
            acknowledged: true,
        },
        Alert {
            name: "WalletLowBalance".into(),
            severity: Severity::Warning,
            acknowledged: false,
        },
    ];
    m
}

fn stale() -> ViewModel {
    let mut m = ViewModel::sample();
    m.stale = vec![Source::Cpu, Source::Temperature];
    m.stale_age_secs = Some(95);
    m
}

fn cases() -> Vec<(String, Screen, ViewModel)> {
    let mut cases = Vec::new();
    for p in Page::ALL {
        cases.push((p.name().to_string(), page(p), ViewModel::sample()));
    }
    cases.push(("alerts-firing".into(), page(Page::Alerts), alerting()));
    cases.push(("overview-alert".into(), page(Page::Overview), alerting()));
    cases.push(("overview-stale".into(), page(Page::Overview), stale()));
    cases.push(("system-stale".into(), page(Page::System), stale()));
    cases.push((
        "critical".into(),
        Screen::Critical {
            name: "BuilderDown".into(),
            inverted: true,
            shift: Point::zero(),
        },
        ViewModel::sample(),
    ));
    cases
}

#[test]
fn pages_match_golden_images() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut mismatches = Vec::new();
    for size in [PanelSize::W128H64, PanelSize::W128H32] {
        for (name, screen, model) in cases() {
            let mut frame = Frame::new(size);
            let Ok(()) = draw_screen(&mut frame, &screen, &model);
            let file = golden_dir().join(format!("{name}-{}.png", size.name()));
            if update {
                std::fs::write(&file, frame.to_png(SCALE)).unwrap();
                continue;
            }
            let golden = std::fs::read(&file)
                .ok()
                .and_then(|bytes| Frame::from_png(&bytes, SCALE));
            if golden.as_ref() != Some(&frame) {
                let actual =
                    std::env::temp_dir().join(format!("actual-{name}-{}.png", size.name()));
                std::fs::write(&actual, frame.to_png(SCALE)).unwrap();
                mismatches.push(format!("{} (actual: {})", file.display(), actual.display()));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "frames differ from golden images (UPDATE_GOLDEN=1 rewrites them):\n{}",
        mismatches.join("\n")
    );
}

/// Every page draws something, stays inside the one-pixel shift margin, and the
/// shifted picture is the same picture moved.
#[test]
fn pages_leave_room_for_the_shift() {
    for size in [PanelSize::W128H64, PanelSize::W128H32] {
        for (name, screen, model) in cases() {
            if matches!(screen, Screen::Critical { .. }) {
                continue;
            }
            let mut frame = Frame::new(size);
            let Ok(()) = draw_screen(&mut frame, &screen, &model);
            assert!(frame.lit_pixels() > 50, "{name} {size:?} is almost empty");
            let h = size.height();
            for x in 0..128 {
                assert!(
                    !frame.pixel(x, h - 1),
                    "{name} {size:?}: bottom row lit at x={x}"
                );
            }
            for y in 0..h {
                assert!(
                    !frame.pixel(127, y),
                    "{name} {size:?}: right column lit at y={y}"
                );
            }
            let Screen::Page { page, .. } = screen else {
                continue;
            };
            let mut moved = Frame::new(size);
            let shifted = Screen::Page {
                page,
                shift: Point::new(1, 1),
                dim: false,
            };
            let Ok(()) = draw_screen(&mut moved, &shifted, &model);
            for y in 0..h - 1 {
                for x in 0..127 {
                    assert_eq!(
                        frame.pixel(x, y),
                        moved.pixel(x + 1, y + 1),
                        "{name} {size:?}"
                    );
                }
            }
        }
    }
}

/// The JSON state format (`nodewatch-agent render --state`), as documented by
/// `tests/states/alerting.json`: the alerting golden state, field for field.
#[test]
fn state_file_example_is_the_alerting_state() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/states/alerting.json");
    let text = std::fs::read_to_string(path).unwrap();
    let model: ViewModel = serde_json::from_str(&text).unwrap();
    assert_eq!(model, alerting());
    // Unknown keys are errors, not silently ignored.
    assert!(serde_json::from_str::<ViewModel>(r#"{"node_nam": "x"}"#).is_err());
}
