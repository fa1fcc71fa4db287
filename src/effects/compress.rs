//! Compresses a built module in-process exactly as the kernel's `scripts/Makefile.modinst`
//! compresses its own (`xz --check=crc32 --lzma2=dict=1MiB`, `zstd -T0`, `gzip -n`), so that
//! nothing is spawned per module and a minimal system without the xz/zstd commands still
//! installs modules the kernel (in-kernel decompression) and kmod can read.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::system::kernel::Compression;

/// xz's dictionary for modules: the kernel's in-kernel decompressor allocates at most this.
const XZ_DICT_SIZE: u32 = 1 << 20;
/// `xz -6`, the preset the kernel's `xz` call uses (its default).
const XZ_PRESET: u32 = 6;
/// `gzip`'s default level, which the kernel's `gzip -n -f` uses.
const GZIP_LEVEL: u32 = 6;

/// Compresses `file` into `file<suffix>` and removes `file` (as `xz -f`/`zstd --rm` do).
/// Returns the new path; on an error the partial output is removed and `file` is left as it was.
pub fn compress_file(file: &Path, compression: Compression) -> io::Result<PathBuf> {
    if compression == Compression::None {
        return Ok(file.to_path_buf());
    }
    let out = PathBuf::from(format!("{}{}", file.display(), compression.suffix()));
    let written = fs::read(file).and_then(|data| {
        let mut sink = BufWriter::new(File::create(&out)?);
        write_compressed(&data, compression, &mut sink)?;
        sink.into_inner().map_err(|e| e.into_error())?.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&out);
        return Err(e);
    }
    let _ = fs::set_permissions(&out, fs::metadata(file)?.permissions());
    fs::remove_file(file)?;
    Ok(out)
}

/// Writes `data` compressed with the kernel's settings for `compression`.
pub fn write_compressed(
    data: &[u8],
    compression: Compression,
    out: &mut dyn Write,
) -> io::Result<()> {
    match compression {
        Compression::None => out.write_all(data),
        Compression::Xz => {
            let mut opts = liblzma::stream::LzmaOptions::new_preset(XZ_PRESET)?;
            opts.dict_size(XZ_DICT_SIZE);
            let mut filters = liblzma::stream::Filters::new();
            filters.lzma2(&opts);
            let stream = liblzma::stream::Stream::new_stream_encoder(
                &filters,
                liblzma::stream::Check::Crc32,
            )?;
            let mut enc = liblzma::write::XzEncoder::new_stream(out, stream);
            enc.write_all(data)?;
            enc.finish().map(drop)
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::Encoder::new(out, zstd::DEFAULT_COMPRESSION_LEVEL)?;
            enc.include_checksum(true)?;
            enc.write_all(data)?;
            enc.finish().map(drop)
        }
        Compression::Gzip => {
            // No name and no time in the header, like `gzip -n`.
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(out, flate2::Compression::new(GZIP_LEVEL));
            enc.write_all(data)?;
            enc.finish().map(drop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_compression_round_trips_and_removes_the_input() {
        let data = sample();
        for c in [Compression::Xz, Compression::Zstd, Compression::Gzip] {
            let dir = tempfile::tempdir().unwrap();
            let ko = dir.path().join("m.ko");
            fs::write(&ko, &data).unwrap();
            let out = compress_file(&ko, c).unwrap();
            assert_eq!(out, dir.path().join(format!("m.ko{}", c.suffix())));
            assert!(!ko.exists());
            let packed = fs::read(&out).unwrap();
            assert!(packed.len() < data.len() / 4, "{c:?}: {}", packed.len());
            let mut back = Vec::new();
            match c {
                Compression::Xz => liblzma::read::XzDecoder::new(&packed[..])
                    .read_to_end(&mut back)
                    .unwrap(),
                Compression::Zstd => zstd::stream::Decoder::new(&packed[..])
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap(),
                _ => flate2::read::GzDecoder::new(&packed[..])
                    .read_to_end(&mut back)
                    .unwrap(),
            };
            assert_eq!(back, data, "{c:?}");
        }
    }

    #[test]
    fn xz_uses_the_kernels_check_and_dictionary() {
        let mut packed = Vec::new();
        write_compressed(&sample(), Compression::Xz, &mut packed).unwrap();
        // Stream flags: check type 1 is CRC32 (the kernel's decompressor accepts no CRC64).
        assert_eq!(&packed[..6], b"\xfd7zXZ\0");
        assert_eq!(packed[7], 0x01);
        // The LZMA2 filter property byte 0x10 encodes a 1 MiB dictionary; it follows the
        // block header's size, flags, filter id 0x21 and property size 1.
        assert_eq!(&packed[12..17], &[0x02, 0x00, 0x21, 0x01, 0x10]);
    }

    #[test]
    fn gzip_header_has_no_name_and_no_time() {
        let mut packed = Vec::new();
        write_compressed(b"x", Compression::Gzip, &mut packed).unwrap();
        assert_eq!(packed[3], 0, "flags: no FNAME");
        assert_eq!(&packed[4..8], &[0, 0, 0, 0], "mtime");
    }

    #[test]
    fn a_missing_input_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let ko = dir.path().join("gone.ko");
        assert!(compress_file(&ko, Compression::Xz).is_err());
        assert!(!dir.path().join("gone.ko.xz").exists());
    }
}
