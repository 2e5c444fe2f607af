//! A video's frames as an MP4 (H.264), the file a run keeps of a video by
//! default (issue 37): a 16-frame 512² clip is ~30 KB where the lossless
//! animated PNG is ~3.5 MB, and it is the format W&B's autolog sends, which
//! every browser, W&B's and MLflow's pages play.
//!
//! Why these parts: the encoder is Cisco's OpenH264, compiled from the
//! source the `openh264` crate carries (a C++ compiler, as the other C
//! libraries here need; nothing from outside the crates registry, so the
//! offline kit builds it); the muxer is `muxide`, pure Rust. Settings that
//! make the same frames give the same bytes on every machine (replay
//! compares them): one thread, no frame skipped, no rate control (a fixed
//! quantiser: the picture's quality does not depend on the frame rate or
//! the clip's length), and no creation time in the file. Colours are
//! converted as BT.601 limited range and the stream says so.
//!
//! Where H.264 cannot hold a video (an odd width or height, larger than
//! 3840×2160), the recorder keeps it as an animated PNG instead
//! ([`super::video`]), as it does on request (`DIFFLOG_VIDEO=apng`).
//! H.264 is patented: Cisco's licence covers its own binaries, not this
//! build from source; the docs say so, and the animated PNG needs no
//! licence.

use super::media::Pixels;
use super::video::{video_error, FrameRate};
use crate::error::Result;
use openh264::encoder::{Encoder, EncoderConfig, FrameType, RateControlMode, VuiConfig};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::OpenH264API;

/// The largest picture the encoder takes, either way round (its level 5.2).
const MAX_LONG_SIDE: u32 = 3840;
/// …and its shorter side.
const MAX_SHORT_SIDE: u32 = 2160;

/// Why a video of this size cannot be an MP4 here (`None`: it can): H.264's
/// 4:2:0 pictures have even sides, and the encoder's largest is 3840×2160.
pub fn unfit(width: u32, height: u32) -> Option<String> {
    if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
        return Some(format!(
            "H.264 needs an even width and height, not {width}x{height}"
        ));
    }
    if width.max(height) > MAX_LONG_SIDE || width.min(height) > MAX_SHORT_SIDE {
        return Some(format!(
            "{width}x{height} is larger than the H.264 encoder's {MAX_LONG_SIDE}x{MAX_SHORT_SIDE}"
        ));
    }
    None
}

/// `mp4` with `packet` (a generated video's XMP: IPTC's digital source
/// type) in a top-level XMP box after its last box, where no offset in its
/// other boxes moves.
pub fn with_xmp(mut mp4: Vec<u8>, packet: &str) -> Result<Vec<u8>> {
    let size = u32::try_from(8 + 16 + packet.len())
        .map_err(|_| video_error("the XMP packet is too large for its MP4 box".into()))?;
    mp4.reserve(size as usize);
    mp4.extend_from_slice(&size.to_be_bytes());
    mp4.extend_from_slice(b"uuid");
    mp4.extend_from_slice(&crate::read::XMP_UUID);
    mp4.extend_from_slice(packet.as_bytes());
    Ok(mp4)
}

/// The frames, in order, as one MP4 that plays at `rate`: every frame as
/// large as the first (see [`unfit`] for the sizes it takes), at least one.
pub fn encode_mp4(frames: &[&dyn Pixels], rate: FrameRate) -> Result<Vec<u8>> {
    let (width, height) = super::video::same_size(frames)?;
    if let Some(why) = unfit(width, height) {
        return Err(video_error(why));
    }
    rate.check()?;
    let h264 = |e: openh264::Error| video_error(format!("H.264 encoding failed: {e}"));
    let mux = |e: muxide::api::MuxerError| video_error(format!("MP4 writing failed: {e}"));
    let config = EncoderConfig::new()
        .max_frame_rate(openh264::encoder::FrameRate::from_hz(rate.fps() as f32))
        .rate_control_mode(RateControlMode::Off)
        .skip_frames(false)
        .num_threads(1)
        .vui(VuiConfig::bt601());
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config).map_err(h264)?;
    let mut out = Vec::new();
    let mut muxer = muxide::api::MuxerBuilder::new(std::io::Cursor::new(&mut out))
        .video(muxide::api::VideoCodec::H264, width, height, rate.fps())
        .build()
        .map_err(mux)?;
    let (w, h) = (width as usize, height as usize);
    let mut yuv = YUVBuffer::new(w, h);
    let mut data = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        yuv.read_rgb8(RgbSliceU8::new(f.rgb(), (w, h)));
        let stream = encoder.encode(&yuv).map_err(h264)?;
        let key = matches!(stream.frame_type(), FrameType::IDR | FrameType::I);
        data.clear();
        stream.write_vec(&mut data);
        if data.is_empty() {
            return Err(video_error(format!(
                "the H.264 encoder gave nothing for frame {i}"
            )));
        }
        // Each frame starts i / fps seconds in (den / num seconds apart).
        let at = i as f64 * f64::from(rate.den) / f64::from(rate.num);
        muxer.write_video(at, &data, key).map_err(mux)?;
    }
    muxer.finish().map_err(mux)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    fn frame(i: u32, (w, h): (u32, u32)) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 9 + i * 5) as u8, (y * 13) as u8, (128 + i * 20) as u8])
        })
    }

    fn clip(n: u32, size: (u32, u32)) -> Vec<RgbImage> {
        (0..n).map(|i| frame(i, size)).collect()
    }

    fn encode(frames: &[RgbImage], fps: f64) -> Result<Vec<u8>> {
        let refs: Vec<&dyn Pixels> = frames.iter().map(|f| f as &dyn Pixels).collect();
        encode_mp4(&refs, FrameRate::from_fps(fps).unwrap())
    }

    #[test]
    fn every_frame_is_a_sample_paced_at_the_rate_and_the_same_frames_give_the_same_bytes() {
        let frames = clip(5, (48, 32));
        let mp4 = encode(&frames, 12.0).unwrap();
        assert_eq!(
            crate::read::mp4_video(&mp4).unwrap(),
            crate::read::Mp4Video {
                width: 48,
                height: 32,
                frames: 5
            }
        );
        // The same bytes again: nothing of when it was made (no creation
        // time) or of the thread count is in the file.
        assert_eq!(encode(&frames, 12.0).unwrap(), mp4, "deterministic");
        // Each sample lasts 1/12 s of the 90 kHz track clock.
        let ctx = mp4parse::read_mp4(&mut std::io::Cursor::new(&mp4)).unwrap();
        let track = &ctx.tracks[0];
        assert_eq!(track.timescale.map(|t| t.0), Some(90_000));
        let stts = track.stts.as_ref().unwrap();
        let deltas: Vec<(u32, u32)> = stts
            .samples
            .iter()
            .map(|s| (s.sample_count, s.sample_delta))
            .collect();
        assert_eq!(deltas.iter().map(|d| d.0).sum::<u32>(), 5);
        assert!(deltas.iter().all(|d| d.1 == 7500), "{deltas:?}");
    }

    #[test]
    fn a_clip_of_noise_and_a_single_frame_are_written_whole() {
        let frames = super::super::video::noise_clip(3, 64, 64);
        let mp4 = encode(&frames, 8.0).unwrap();
        assert_eq!(crate::read::mp4_video(&mp4).unwrap().frames, 3);
        let one = encode(&frames[..1], 0.5).unwrap();
        assert_eq!(crate::read::mp4_video(&one).unwrap().frames, 1);
    }

    #[test]
    fn sizes_h264_cannot_hold_are_refused_by_name() {
        assert_eq!(unfit(512, 512), None);
        assert_eq!(unfit(3840, 2160), None);
        assert_eq!(unfit(2160, 3840), None);
        for (w, h) in [(25, 16), (24, 15), (0, 16), (3842, 2160), (2162, 2162)] {
            assert!(unfit(w, h).is_some(), "{w}x{h}");
        }
        let e = encode(&clip(2, (25, 16)), 8.0).unwrap_err().to_string();
        assert!(e.contains("even width and height, not 25x16"), "{e}");
        let e = encode(&[], 8.0).unwrap_err().to_string();
        assert!(e.contains("at least one frame"), "{e}");
        let mixed = [frame(0, (24, 16)), frame(1, (16, 16))];
        let e = encode(&mixed, 8.0).unwrap_err().to_string();
        assert!(e.contains("frame 1 is 16x16"), "{e}");
    }

    #[test]
    fn what_is_not_an_mp4_of_one_h264_track_is_refused_by_the_reader() {
        let mp4 = encode(&clip(3, (32, 32)), 8.0).unwrap();
        for bad in [&b"not an mp4 at all"[..], &mp4[..mp4.len() / 3], &[]] {
            assert!(crate::read::mp4_video(bad).is_err());
        }
        let png = crate::run::media::encode_png(&frame(0, (8, 8))).unwrap();
        assert!(crate::read::mp4_video(&png).is_err());
    }

    #[test]
    fn an_xmp_box_is_read_back_and_the_video_still_reads_as_it_did() {
        let mp4 = encode(&clip(3, (32, 32)), 8.0).unwrap();
        assert_eq!(crate::read::mp4_xmp(&mp4), Ok(None));
        let packet = crate::recipe::xmp_packet(crate::recipe::TRAINED_ALGORITHMIC_MEDIA);
        let marked = with_xmp(mp4.clone(), &packet).unwrap();
        assert_eq!(crate::read::mp4_xmp(&marked), Ok(Some(packet.clone())));
        assert_eq!(
            crate::read::mp4_video(&marked).unwrap(),
            crate::read::mp4_video(&mp4).unwrap()
        );
        // A box that runs past the end, or a cut header, is said as such;
        // a packet that is not UTF-8 too.
        let e = crate::read::mp4_xmp(&marked[..marked.len() - 1]).unwrap_err();
        assert!(e.contains("past the file's end"), "{e}");
        let mut cut = mp4.clone();
        cut.extend_from_slice(&[0, 0, 0]);
        assert!(crate::read::mp4_xmp(&cut)
            .unwrap_err()
            .contains("cut short"));
        let mut bad = with_xmp(mp4.clone(), "\u{fffd}").unwrap();
        let n = bad.len();
        bad[n - 3] = 0xff;
        assert!(crate::read::mp4_xmp(&bad)
            .unwrap_err()
            .contains("not UTF-8"));
        // A box that says it is smaller than its own header.
        let mut tiny = mp4.clone();
        tiny.extend_from_slice(&[0, 0, 0, 4, b'f', b'r', b'e', b'e']);
        let e = crate::read::mp4_xmp(&tiny).unwrap_err();
        assert!(e.contains("less than its own header"), "{e}");
        // What remake compares: the video the boxes hold, the same with or
        // without the XMP box, another for other frames.
        let plays = crate::read::mp4_stream_digest(&mp4).unwrap();
        assert_eq!(crate::read::mp4_stream_digest(&marked), Ok(plays.clone()));
        let other = encode(&clip(4, (32, 32))[1..], 8.0).unwrap();
        assert_ne!(crate::read::mp4_stream_digest(&other).unwrap(), plays);
        assert!(crate::read::mp4_stream_digest(&mp4[..mp4.len() / 2]).is_err());
    }
}
