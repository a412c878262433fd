//! A 1-bit frame laid out as the SSD1306's display memory: one byte per column per
//! 8-row page, bit 0 at the top. Diffing two frames therefore gives the very columns
//! and pages a driver must resend.

use embedded_graphics::Pixel;
use embedded_graphics::draw_target::DrawTarget;
use embedded_graphics::geometry::{OriginDimensions, Size};
use embedded_graphics::pixelcolor::BinaryColor;

/// Panel width: both supported panels are 128 columns wide.
pub const WIDTH: u32 = 128;

/// The two SSD1306 panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PanelSize {
    /// 128×64 (0.96", 1.3").
    #[default]
    W128H64,
    /// 128×32 (0.91").
    W128H32,
}

impl PanelSize {
    /// Rows.
    pub const fn height(self) -> u32 {
        match self {
            PanelSize::W128H64 => 64,
            PanelSize::W128H32 => 32,
        }
    }

    /// Pages of 8 rows.
    pub const fn pages(self) -> u32 {
        self.height() / 8
    }

    /// Parses `128x64` or `128x32`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "128x64" => Some(PanelSize::W128H64),
            "128x32" => Some(PanelSize::W128H32),
            _ => None,
        }
    }

    /// `128x64` or `128x32`.
    pub const fn name(self) -> &'static str {
        match self {
            PanelSize::W128H64 => "128x64",
            PanelSize::W128H32 => "128x32",
        }
    }
}

/// The smallest block of columns × pages holding every difference between two frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangedArea {
    /// First changed column.
    pub first_column: u32,
    /// Last changed column (inclusive).
    pub last_column: u32,
    /// First changed page (8-row band).
    pub first_page: u32,
    /// Last changed page (inclusive).
    pub last_page: u32,
}

impl ChangedArea {
    /// Bytes of display memory the area covers.
    pub fn bytes(&self) -> u32 {
        (self.last_column - self.first_column + 1) * (self.last_page - self.first_page + 1)
    }
}

/// One frame of the panel.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    size: PanelSize,
    memory: [u8; 1024],
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("size", &self.size)
            .field("lit", &self.lit_pixels())
            .finish()
    }
}

impl Frame {
    /// A dark frame.
    pub fn new(size: PanelSize) -> Self {
        Self {
            size,
            memory: [0; 1024],
        }
    }

    /// Its panel size.
    pub fn size(&self) -> PanelSize {
        self.size
    }

    /// The display memory in SSD1306 order (page 0 columns 0–127, page 1, …).
    pub fn memory(&self) -> &[u8] {
        &self.memory[..(WIDTH * self.size.pages()) as usize]
    }

    /// Turns every pixel off.
    pub fn clear(&mut self) {
        self.memory = [0; 1024];
    }

    /// Whether the pixel at (x, y) is lit; false outside the panel.
    pub fn pixel(&self, x: u32, y: u32) -> bool {
        if x >= WIDTH || y >= self.size.height() {
            return false;
        }
        self.memory[((y / 8) * WIDTH + x) as usize] & (1 << (y % 8)) != 0
    }

    /// Sets one pixel; ignored outside the panel.
    pub fn set_pixel(&mut self, x: u32, y: u32, on: bool) {
        if x >= WIDTH || y >= self.size.height() {
            return;
        }
        let byte = &mut self.memory[((y / 8) * WIDTH + x) as usize];
        if on {
            *byte |= 1 << (y % 8);
        } else {
            *byte &= !(1 << (y % 8));
        }
    }

    /// How many pixels are lit.
    pub fn lit_pixels(&self) -> u32 {
        self.memory().iter().map(|b| b.count_ones()).sum()
    }

    /// Where this frame differs from `previous`; `None` when they are the same. A
    /// frame of another size differs everywhere.
    pub fn changed_area(&self, previous: &Frame) -> Option<ChangedArea> {
        if self.size != previous.size {
            return Some(self.full_area());
        }
        let mut area: Option<ChangedArea> = None;
        for (i, (a, b)) in self.memory().iter().zip(previous.memory()).enumerate() {
            if a == b {
                continue;
            }
            let (page, column) = (i as u32 / WIDTH, i as u32 % WIDTH);
            area = Some(match area {
                None => ChangedArea {
                    first_column: column,
                    last_column: column,
                    first_page: page,
                    last_page: page,
                },
                Some(a) => ChangedArea {
                    first_column: a.first_column.min(column),
                    last_column: a.last_column.max(column),
                    first_page: a.first_page.min(page),
                    last_page: a.last_page.max(page),
                },
            });
        }
        area
    }

    /// The whole panel as an area.
    pub fn full_area(&self) -> ChangedArea {
        ChangedArea {
            first_column: 0,
            last_column: WIDTH - 1,
            first_page: 0,
            last_page: self.size.pages() - 1,
        }
    }

    /// The frame as a PNG, each pixel a `scale`×`scale` square (lit = white), in
    /// 1-bit grayscale: a 128×64 frame at ×4 is about 1–3 KB.
    pub fn to_png(&self, scale: u32) -> Vec<u8> {
        let scale = scale.clamp(1, 16);
        let (w, h) = (WIDTH * scale, self.size.height() * scale);
        let row_bytes = w.div_ceil(8) as usize;
        let mut data = vec![0u8; row_bytes * h as usize];
        for y in 0..h {
            let row = &mut data[y as usize * row_bytes..][..row_bytes];
            for x in 0..w {
                if self.pixel(x / scale, y / scale) {
                    row[(x / 8) as usize] |= 0x80 >> (x % 8);
                }
            }
        }
        let mut out = Vec::with_capacity(4096);
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::One);
        encoder.set_compression(png::Compression::High);
        // Writing into a Vec cannot fail, and the sizes above always match.
        if let Ok(mut writer) = encoder.write_header() {
            let _ = writer.write_image_data(&data);
        }
        out
    }

    /// Reads a frame back from a PNG written by [`Frame::to_png`] at `scale`
    /// (for golden-image tests and tools). `None` when it is not such a PNG.
    pub fn from_png(bytes: &[u8], scale: u32) -> Option<Frame> {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().ok()?;
        let info = reader.info();
        let (w, h) = (info.width, info.height);
        if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::One {
            return None;
        }
        let size = match (w / scale.max(1), h / scale.max(1)) {
            (128, 64) => PanelSize::W128H64,
            (128, 32) => PanelSize::W128H32,
            _ => return None,
        };
        let mut data = vec![0; reader.output_buffer_size()?];
        let frame_info = reader.next_frame(&mut data).ok()?;
        let row_bytes = frame_info.line_size;
        let mut frame = Frame::new(size);
        for y in 0..size.height() {
            for x in 0..WIDTH {
                let (px, py) = (x * scale, y * scale);
                let byte = *data.get(py as usize * row_bytes + (px / 8) as usize)?;
                frame.set_pixel(x, y, byte & (0x80 >> (px % 8)) != 0);
            }
        }
        Some(frame)
    }
}

impl OriginDimensions for Frame {
    fn size(&self) -> Size {
        Size::new(WIDTH, self.size.height())
    }
}

impl DrawTarget for Frame {
    type Color = BinaryColor;
    type Error = std::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(point, color) in pixels {
            if point.x >= 0 && point.y >= 0 {
                self.set_pixel(point.x as u32, point.y as u32, color.is_on());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_ssd1306_pages() {
        let mut f = Frame::new(PanelSize::W128H64);
        f.set_pixel(3, 9, true);
        assert_eq!(f.memory()[128 + 3], 0b10);
        assert!(f.pixel(3, 9));
        f.set_pixel(500, 500, true);
        assert_eq!(f.lit_pixels(), 1);
        assert_eq!(Frame::new(PanelSize::W128H32).memory().len(), 512);
    }

    #[test]
    fn changed_area_bounds_the_difference() {
        let a = Frame::new(PanelSize::W128H64);
        let mut b = a.clone();
        assert_eq!(b.changed_area(&a), None);
        b.set_pixel(10, 20, true);
        b.set_pixel(30, 17, true);
        let area = b.changed_area(&a).expect("changed");
        assert_eq!(
            area,
            ChangedArea {
                first_column: 10,
                last_column: 30,
                first_page: 2,
                last_page: 2
            }
        );
        assert_eq!(area.bytes(), 21);
        assert_eq!(a.full_area().bytes(), 1024);
    }

    #[test]
    fn png_round_trip() {
        let mut f = Frame::new(PanelSize::W128H32);
        f.set_pixel(0, 0, true);
        f.set_pixel(127, 31, true);
        f.set_pixel(64, 7, true);
        let png = f.to_png(4);
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!(Frame::from_png(&png, 4), Some(f));
        assert_eq!(Frame::from_png(b"garbage", 4), None);
    }
}
