//! The pages, drawn for 128×64 and 128×32 panels, and the critical takeover.
//!
//! Every page keeps a one-pixel margin on the right and at the bottom, so the
//! burn-in shift (at most one pixel each way) never clips it. Unknown figures are
//! `--`; stale ones end in `?` and the title bar says `STALE` with their age.

use embedded_graphics::draw_target::DrawTargetExt;
use embedded_graphics::mono_font::ascii::{FONT_5X8, FONT_6X10, FONT_10X20};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyleBuilder};
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};

use crate::controller::Screen;
use crate::frame::PanelSize;
use crate::model::{BuilderState, LinkState, Severity, Source, Usage, ViewModel, age};

/// The pages, in rotation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// Large OK / WARN / ALERT, the node name and the most important fact.
    Overview,
    /// CPU, temperature, memory, disk, power.
    System,
    /// The builder's state, uptime, version and data size.
    Builder,
    /// Wallet balances and claimable rewards.
    Wallet,
    /// Firing alerts.
    Alerts,
    /// IP address and the LoRa link.
    Network,
}

impl Page {
    /// Every page, in default rotation order.
    pub const ALL: [Page; 6] = [
        Page::Overview,
        Page::System,
        Page::Builder,
        Page::Wallet,
        Page::Alerts,
        Page::Network,
    ];

    /// Its name in config and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Page::Overview => "overview",
            Page::System => "system",
            Page::Builder => "builder",
            Page::Wallet => "wallet",
            Page::Alerts => "alerts",
            Page::Network => "network",
        }
    }

    /// Looks a page up by name.
    pub fn from_name(name: &str) -> Option<Page> {
        Page::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the page has anything to show for `model`: the builder page without
    /// a monitored builder, and the wallet page without any figure, are skipped by
    /// the rotation and the button.
    pub fn has_content(self, model: &ViewModel) -> bool {
        match self {
            Page::Builder => model.builder.is_some(),
            Page::Wallet => {
                let w = &model.wallet;
                w.eth.is_some()
                    || w.sitx.is_some()
                    || w.reward_eth.is_some()
                    || w.reward_sitx.is_some()
            }
            _ => true,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Page::Overview => "",
            Page::System => "SYSTEM",
            Page::Builder => "BUILDER",
            Page::Wallet => "WALLET",
            Page::Alerts => "ALERTS",
            Page::Network => "NETWORK",
        }
    }

    fn sources(self) -> &'static [Source] {
        match self {
            Page::Overview | Page::Alerts => &[],
            Page::System => &[
                Source::Cpu,
                Source::Temperature,
                Source::Memory,
                Source::Disk,
                Source::Power,
            ],
            Page::Builder => &[Source::Builder],
            Page::Wallet => &[Source::Wallet],
            Page::Network => &[Source::Network],
        }
    }
}

/// Draws a screen. Pixels outside the panel are clipped; the target is cleared first.
pub fn draw_screen<D>(target: &mut D, screen: &Screen, model: &ViewModel) -> Result<(), D::Error>
where
    D: DrawTarget<Color = BinaryColor>,
{
    let size = if target.bounding_box().size.height >= 64 {
        PanelSize::W128H64
    } else {
        PanelSize::W128H32
    };
    match screen {
        Screen::Off => target.clear(BinaryColor::Off),
        Screen::Page { page, shift, .. } => {
            target.clear(BinaryColor::Off)?;
            let mut shifted = target.translated(*shift);
            match page {
                Page::Overview => overview(&mut shifted, size, model),
                _ => rows_page(&mut shifted, size, *page, model),
            }
        }
        Screen::Critical {
            name,
            inverted,
            shift,
        } => {
            let (fg, bg) = if *inverted {
                (BinaryColor::Off, BinaryColor::On)
            } else {
                (BinaryColor::On, BinaryColor::Off)
            };
            target.clear(bg)?;
            let mut shifted = target.translated(*shift);
            critical(&mut shifted, size, name, &model.node_name, fg, bg)
        }
    }
}

fn draw_text<D>(
    target: &mut D,
    text: &str,
    font: &MonoFont<'_>,
    at: Point,
    fg: BinaryColor,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = BinaryColor>,
{
    let style = MonoTextStyleBuilder::new()
        .font(font)
        .text_color(fg)
        .build();
    Text::with_baseline(text, at, style, Baseline::Top).draw(target)?;
    Ok(())
}

/// At most `max` characters of `text` (ASCII fonts: one byte, one glyph).
fn fit(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn centered_x(text: &str, char_width: u32, scale: u32) -> i32 {
    let w = text.chars().count() as u32 * char_width * scale;
    (127i32 - w as i32).max(0) / 2
}

/// Draws through a scale: each pixel becomes a `scale`×`scale` square, for the
/// status word readable from two metres.
struct Scaled<'a, D> {
    target: &'a mut D,
    origin: Point,
    scale: u32,
}

impl<D: DrawTarget<Color = BinaryColor>> Dimensions for Scaled<'_, D> {
    fn bounding_box(&self) -> Rectangle {
        let b = self.target.bounding_box();
        Rectangle::new(Point::zero(), b.size / self.scale)
    }
}

impl<D: DrawTarget<Color = BinaryColor>> DrawTarget for Scaled<'_, D> {
    type Color = BinaryColor;
    type Error = D::Error;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let s = self.scale;
        for Pixel(p, color) in pixels {
            if color.is_on() {
                let at = self.origin + p * s as i32;
                self.target
                    .fill_solid(&Rectangle::new(at, Size::new(s, s)), color)?;
            }
        }
        Ok(())
    }
}

fn big_word<D>(target: &mut D, word: &str, at: Point, scale: u32) -> Result<(), D::Error>
where
    D: DrawTarget<Color = BinaryColor>,
{
    let mut scaled = Scaled {
        target,
        origin: at,
        scale,
    };
    draw_text(
        &mut scaled,
        word,
        &FONT_10X20,
        Point::zero(),
        BinaryColor::On,
    )
}

fn stale_badge(model: &ViewModel, sources: &[Source]) -> Option<String> {
    sources
        .iter()
        .any(|s| model.is_stale(*s))
        .then(|| format!("STALE {}", age(model.stale_age_secs.unwrap_or(0))))
}

fn overview<D>(target: &mut D, size: PanelSize, model: &ViewModel) -> Result<(), D::Error>
where
    D: DrawTarget<Color = BinaryColor>,
{
    let (status, fact) = model.status();
    let word = status.word();
    let badge = (!model.stale.is_empty())
        .then(|| format!("STALE {}", age(model.stale_age_secs.unwrap_or(0))));
    match size {
        PanelSize::W128H64 => {
            let name_room = if badge.is_some() { 11 } else { 21 };
            draw_text(
                target,
                fit(&model.node_name, name_room),
                &FONT_6X10,
                Point::new(0, 0),
                BinaryColor::On,
            )?;
            if let Some(badge) = &badge {
                inverted_label(target, badge, &FONT_6X10, 126, 0)?;
            }
            big_word(target, word, Point::new(centered_x(word, 10, 2), 12), 2)?;
            draw_text(
                target,
                fit(&fact, 21),
                &FONT_6X10,
                Point::new(centered_x(fit(&fact, 21), 6, 1), 53),
                BinaryColor::On,
            )
        }
        PanelSize::W128H32 => {
            big_word(target, word, Point::new(0, 0), 1)?;
            let x = 4 + word.len() as i32 * 10;
            let room = ((126 - x) / 6).max(0) as usize;
            draw_text(
                target,
                fit(&model.node_name, room),
                &FONT_6X10,
                Point::new(x, 0),
                BinaryColor::On,
            )?;
            if let Some(badge) = &badge {
                inverted_label(target, fit(badge, room), &FONT_6X10, 126, 10)?;
            }
            draw_text(
                target,
                fit(&fact, 21),
                &FONT_6X10,
                Point::new(0, 21),
                BinaryColor::On,
            )
        }
    }
}

/// A label in reverse video, right-aligned at `right`.
fn inverted_label<D>(
    target: &mut D,
    text: &str,
    font: &MonoFont<'_>,
    right: i32,
    top: i32,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = BinaryColor>,
{
    let w = text.chars().count() as i32 * font.character_size.width as i32 + 1;
    let x = right - w;
    Rectangle::new(
        Point::new(x, top),
        Size::new(w as u32 + 1, font.character_size.height),
    )
    .into_styled(PrimitiveStyle::with_fill(BinaryColor::On))
    .draw(target)?;
    draw_text(target, text, font, Point::new(x + 1, top), BinaryColor::Off)
}

/// A row: label and value, the value marked when its source is stale.
struct Row {
    label: &'static str,
    value: String,
    stale: bool,
}

fn row(label: &'static str, value: String, model: &ViewModel, source: Option<Source>) -> Row {
    Row {
        label,
        stale: source.is_some_and(|s| model.is_stale(s)),
        value,
    }
}

fn or_unknown<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map(show).unwrap_or_else(|| "--".into())
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// GiB with one decimal below 100, whole above (`3.8`, `252`), so a row fits.
fn gib_text(bytes: u64) -> String {
    let g = gib(bytes);
    if g >= 99.95 {
        format!("{g:.0}")
    } else {
        format!("{g:.1}")
    }
}

/// The rows of a page of rows (the overview has none: it is drawn on its own).
fn rows_for(page: Page, size: PanelSize, model: &ViewModel) -> Vec<Row> {
    let compact = size == PanelSize::W128H32;
    match page {
        Page::Overview => Vec::new(),
        Page::System => system_rows(model, compact),
        Page::Builder => builder_rows(model),
        Page::Wallet => wallet_rows(model, compact),
        Page::Alerts => alert_rows(model),
        Page::Network => network_rows(model),
    }
}

/// Memory or disk use: `3.8/7.6G 50%`, or only `50%` on a compact panel.
fn usage_text(usage: Option<Usage>, compact: bool) -> String {
    or_unknown(usage, |u| {
        if compact {
            format!("{:.0}%", u.percent())
        } else {
            format!(
                "{}/{}G {:.0}%",
                gib_text(u.used_bytes),
                gib_text(u.total_bytes),
                u.percent()
            )
        }
    })
}

/// The power row's value: under-voltage first, then throttling.
fn power_text(m: &ViewModel) -> String {
    match (m.under_voltage, m.throttled) {
        (Some(true), _) => "UNDER-VOLTAGE".to_string(),
        (_, Some(true)) => "throttled".to_string(),
        (Some(false), _) | (_, Some(false)) => "ok".to_string(),
        (None, None) => "--".to_string(),
    }
}

/// CPU, temperature, memory, disk and power: five rows, or three on a compact panel
/// (CPU with temperature, memory with disk).
fn system_rows(m: &ViewModel, compact: bool) -> Vec<Row> {
    let cpu = or_unknown(m.cpu_percent, |c| format!("{c:.0}%"));
    let temp = or_unknown(m.soc_temp_celsius, |t| format!("{t:.1}C"));
    let power = power_text(m);
    if compact {
        let stale_cpu = m.is_stale(Source::Cpu) || m.is_stale(Source::Temperature);
        let mut cpu_row = row("CPU", format!("{cpu} {temp}"), m, None);
        cpu_row.stale = stale_cpu;
        let mut use_row = row(
            "MEM",
            format!(
                "{} DISK {}",
                usage_text(m.memory, compact),
                usage_text(m.disk, compact)
            ),
            m,
            None,
        );
        use_row.stale = m.is_stale(Source::Memory) || m.is_stale(Source::Disk);
        vec![cpu_row, use_row, row("PWR", power, m, Some(Source::Power))]
    } else {
        vec![
            row("CPU", cpu, m, Some(Source::Cpu)),
            row("TEMP", temp, m, Some(Source::Temperature)),
            row(
                "MEM",
                usage_text(m.memory, compact),
                m,
                Some(Source::Memory),
            ),
            row("DISK", usage_text(m.disk, compact), m, Some(Source::Disk)),
            row("PWR", power, m, Some(Source::Power)),
        ]
    }
}

/// The builder's state, uptime, version and data size.
fn builder_rows(m: &ViewModel) -> Vec<Row> {
    let Some(b) = &m.builder else {
        return vec![row("", "no builder".into(), m, None)];
    };
    let state = match b.state {
        BuilderState::Ready => "READY",
        BuilderState::Starting => "STARTING",
        BuilderState::Down => "DOWN",
        BuilderState::Unknown => "--",
    };
    let s = Some(Source::Builder);
    vec![
        row("STATE", state.into(), m, s),
        row("UP", or_unknown(b.uptime_secs, age), m, s),
        row("VER", or_unknown(b.version.clone(), |v| v), m, s),
        row(
            "DATA",
            or_unknown(b.data_dir_bytes, |d| format!("{}G", gib_text(d))),
            m,
            s,
        ),
    ]
}

/// ETH, sITX and the claimable rewards (both rewards on one row on a compact panel).
fn wallet_rows(m: &ViewModel, compact: bool) -> Vec<Row> {
    let w = &m.wallet;
    let s = Some(Source::Wallet);
    let amount = |v: Option<f64>| or_unknown(v, format_amount);
    if compact {
        vec![
            row("ETH", amount(w.eth), m, s),
            row("sITX", amount(w.sitx), m, s),
            row(
                "RWD",
                format!("{}E {}S", amount(w.reward_eth), amount(w.reward_sitx)),
                m,
                s,
            ),
        ]
    } else {
        vec![
            row("ETH", amount(w.eth), m, s),
            row("sITX", amount(w.sitx), m, s),
            row("RWD E", amount(w.reward_eth), m, s),
            row("RWD S", amount(w.reward_sitx), m, s),
        ]
    }
}

/// One row per firing alert, marked by severity and acknowledgement.
fn alert_rows(m: &ViewModel) -> Vec<Row> {
    if m.alerts.is_empty() {
        return vec![row("", "no alerts".into(), m, None)];
    }
    m.alerts
        .iter()
        .map(|a| {
            let mark = match a.severity {
                Severity::Critical => "!!",
                Severity::Warning => "!",
                Severity::Info => "i",
            };
            let ack = if a.acknowledged { " ack" } else { "" };
            row(mark, format!("{}{ack}", a.name), m, None)
        })
        .collect()
}

/// The IP address and the LoRa link (its last acknowledgement and signal).
fn network_rows(m: &ViewModel) -> Vec<Row> {
    let s = Some(Source::Network);
    let mut rows = vec![row("IP", or_unknown(m.ip_address.clone(), |ip| ip), m, s)];
    match &m.lora {
        None => rows.push(row("LORA", "none".into(), m, None)),
        Some(l) => {
            let link = match l.link {
                LinkState::Up => "up",
                LinkState::Down => "DOWN",
                LinkState::Off => "off",
            };
            rows.push(row("LORA", link.into(), m, None));
            rows.push(row(
                "ACK",
                or_unknown(l.last_ack_secs, |a| format!("{} ago", age(a))),
                m,
                None,
            ));
            rows.push(row(
                "RSSI",
                or_unknown(l.rssi_dbm, |r| format!("{r}dBm")),
                m,
                None,
            ));
        }
    }
    rows
}

/// A token amount in at most 8 characters: `0.0123`, `1520.5`, `12.3k`.
fn format_amount(v: f64) -> String {
    let a = v.abs();
    if a >= 100_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if a >= 1000.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn rows_page<D>(
    target: &mut D,
    size: PanelSize,
    page: Page,
    model: &ViewModel,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = BinaryColor>,
{
    // (font, row pitch, label width in characters, rows, title bar height, first row).
    // On 128×32 the 5×8 font's empty top row is cut from the title bar, so three
    // rows and their descenders fit above the shift margin.
    let (font, line, label_chars, max_rows, bar, top) = match size {
        PanelSize::W128H64 => (&FONT_6X10, 10, 6, 5, 10, 12),
        PanelSize::W128H32 => (&FONT_5X8, 8, 6, 3, 7, 7),
    };
    let title_y = bar - font.character_size.height as i32;
    let cw = font.character_size.width as i32;
    // Title bar in reverse video: page name left, node name (or STALE) right.
    Rectangle::new(Point::zero(), Size::new(127, bar as u32))
        .into_styled(PrimitiveStyle::with_fill(BinaryColor::On))
        .draw(target)?;
    let mut title = page.title().to_string();
    if page == Page::Alerts && !model.alerts.is_empty() {
        title = format!("{title} {}", model.alerts.len());
    }
    draw_text(
        target,
        &title,
        font,
        Point::new(1, title_y),
        BinaryColor::Off,
    )?;
    let right = stale_badge(model, page.sources()).unwrap_or_else(|| model.node_name.clone());
    let room = ((126 / cw) as usize).saturating_sub(title.len() + 1);
    let right = fit(&right, room);
    let x = 126 - right.chars().count() as i32 * cw;
    draw_text(
        target,
        right,
        font,
        Point::new(x, title_y),
        BinaryColor::Off,
    )?;
    // Alerts carry a short severity mark, not a label: give the name the room.
    let value_x = if page == Page::Alerts { 3 } else { label_chars } * cw;
    let value_room = ((126 - value_x) / cw) as usize;
    for (i, r) in rows_for(page, size, model)
        .iter()
        .take(max_rows)
        .enumerate()
    {
        let y = top + i as i32 * line;
        draw_text(target, r.label, font, Point::new(0, y), BinaryColor::On)?;
        let (x, room) = if r.label.is_empty() {
            (0, 21)
        } else {
            (value_x, value_room)
        };
        if r.stale {
            let value = format!("{}?", fit(&r.value, room.saturating_sub(1)));
            draw_text(target, &value, font, Point::new(x, y), BinaryColor::On)?;
        } else {
            draw_text(
                target,
                fit(&r.value, room),
                font,
                Point::new(x, y),
                BinaryColor::On,
            )?;
        }
    }
    Ok(())
}

fn critical<D>(
    target: &mut D,
    size: PanelSize,
    name: &str,
    node: &str,
    fg: BinaryColor,
    _bg: BinaryColor,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = BinaryColor>,
{
    let word = "CRITICAL";
    let name = fit(name, 21);
    match size {
        PanelSize::W128H64 => {
            draw_text(
                target,
                word,
                &FONT_10X20,
                Point::new(centered_x(word, 10, 1), 2),
                fg,
            )?;
            draw_text(
                target,
                name,
                &FONT_6X10,
                Point::new(centered_x(name, 6, 1), 26),
                fg,
            )?;
            let node = fit(node, 21);
            draw_text(
                target,
                node,
                &FONT_6X10,
                Point::new(centered_x(node, 6, 1), 38),
                fg,
            )?;
            let hint = "press to acknowledge";
            draw_text(
                target,
                hint,
                &FONT_5X8,
                Point::new(centered_x(hint, 5, 1), 53),
                fg,
            )
        }
        PanelSize::W128H32 => {
            draw_text(
                target,
                word,
                &FONT_10X20,
                Point::new(centered_x(word, 10, 1), 0),
                fg,
            )?;
            draw_text(
                target,
                name,
                &FONT_6X10,
                Point::new(centered_x(name, 6, 1), 21),
                fg,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_names_round_trip() {
        for p in Page::ALL {
            assert_eq!(Page::from_name(p.name()), Some(p));
        }
        assert_eq!(Page::from_name("nope"), None);
    }

    #[test]
    fn amounts_fit() {
        assert_eq!(format_amount(0.0123), "0.0123");
        assert_eq!(format_amount(1520.5), "1520.5");
        assert_eq!(format_amount(12.345), "12.35");
        assert_eq!(format_amount(123_456.0), "123.5k");
    }

    #[test]
    fn fit_cuts_by_characters() {
        assert_eq!(fit("abcdef", 3), "abc");
        assert_eq!(fit("ab", 3), "ab");
    }
}
