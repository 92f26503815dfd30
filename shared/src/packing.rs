//! How raw pages are packed: zstd at level 1. On a realistic results page, against gzip at its
//! fastest level (zlib-rs), it packs 1.37× and unpacks 1.29× as fast, into 1.77× fewer bytes
//! (`cargo bench -p cxone-etm --bench transform`, docs/performance.md); the raw pages are most of
//! the bytes a run writes and reads. Runs before
//! it stored them gzip'd, and those still read. Batch files and closures stay gzip ([`gzip`]), as ETM reads them.

use bytes::Bytes;

use crate::buffers::BufferPool;

/// The name a raw page's file ends with.
pub const PAGE_SUFFIX: &str = ".json.zst";
/// The name raw pages of runs before zstd end with.
pub const GZIP_PAGE_SUFFIX: &str = ".json.gz";

/// Parts (batch lines, a page) gzip'd one after another at the fastest level, never joined in
/// memory first: batch files are gzip, as ETM reads them.
pub fn gzip(parts: &[impl AsRef<[u8]>]) -> Bytes {
    let size: usize = parts.iter().map(|p| p.as_ref().len()).sum();
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(size / 4), flate2::Compression::fast());
    for part in parts {
        std::io::Write::write_all(&mut encoder, part.as_ref())
            .expect("writing to a Vec cannot fail");
    }
    Bytes::from(encoder.finish().expect("writing to a Vec cannot fail"))
}

const PAGE_LEVEL: i32 = 1;

/// A page packed with its checksum, so a page damaged at rest fails to unpack, as gzip's CRC made
/// it fail before.
pub fn pack_page(bytes: &[u8]) -> Bytes {
    let mut packer = zstd::bulk::Compressor::new(PAGE_LEVEL).expect("a zstd context");
    packer
        .include_checksum(true)
        .expect("zstd takes the checksum flag");
    let mut packed = packer
        .compress(bytes)
        .expect("packing into memory cannot fail");
    // Made with room for the worst case, the page's size and more: a page held until stored
    // would keep it all.
    packed.shrink_to_fit();
    Bytes::from(packed)
}

/// The checksum a page packed by [`pack_page`] ends with: the low 32 bits of XXH64 over the
/// page's bytes, which unpacking checks against them. A collect's outcome lists each page's, so
/// the transform reconciles only pages the completeness proof was taken over (another attempt of
/// the collect may store its own under the same keys). `None`: not one zstd frame that carries a
/// checksum (a gzip page of an older run, say).
pub fn page_checksum(packed: &[u8]) -> Option<u32> {
    const MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();
    const CHECKSUM_FLAG: u8 = 1 << 2;
    let one_frame = zstd::zstd_safe::find_frame_compressed_size(packed) == Ok(packed.len());
    let descriptor = *packed.get(4)?;
    if !one_frame || packed[..4] != MAGIC || descriptor & CHECKSUM_FLAG == 0 {
        return None;
    }
    let trailer = packed.get(packed.len().checked_sub(4)?..)?;
    Some(u32::from_le_bytes(trailer.try_into().ok()?))
}

/// Refuses a page whose checksum (`found`, see [`page_checksum`]) is not the one `outcome` lists
/// for it (`listed`): one stored over since collect counted it, or damaged.
pub fn ensure_counted(found: Option<u32>, listed: u32, outcome: &str) -> Result<(), String> {
    match found {
        Some(found) if found == listed => Ok(()),
        found => Err(format!(
            "not the page collect counted (its checksum is {}, {outcome} lists {listed:08x}): stored over since (another attempt of the collect, retried while it still ran) or damaged",
            found.map_or_else(|| "missing".to_string(), |f| format!("{f:08x}"))
        )),
    }
}

/// The most a packed page may say it unpacks to and be unpacked into one buffer of that size; a
/// larger claim (a damaged header, or a page larger than any collect writes) is unpacked as a
/// stream, so a false size reserves no more than this.
const ONE_BUFFER_LIMIT: u64 = 256 << 20;

/// Buffers pages are unpacked into, kept from item to item. Most of a tenant's items are one
/// page of 1 to 4 MB: each was unpacked into a buffer mapped anew and faulted in, a third of the
/// page faults of a run over 1,000 such projects (docs/performance.md). A larger page (a large
/// item's) keeps its buffer from page to page instead, and no longer. Four buffers of 4 MiB at
/// most wait idle, and a large item frees them before its transform ([`free_page_buffers`]).
static PAGE_BUFFERS: BufferPool = BufferPool::new(
    crate::process::MALLOC_MMAP_FROM as usize..=4 * 1024 * 1024,
    4,
);

/// An empty buffer to unpack a page into ([`unpack_into`]): one a page before gave back
/// ([`give_back_page_buffer`]) if any.
pub(crate) fn page_buffer() -> Vec<u8> {
    PAGE_BUFFERS.take_any()
}

/// Keeps a page's buffer for the next page, when it is of a size kept.
pub(crate) fn give_back_page_buffer(buffer: Vec<u8>) {
    PAGE_BUFFERS.give_back(buffer);
}

/// Frees the page buffers waiting idle: before a large item, whose memory budget they are not.
pub(crate) fn free_page_buffers() {
    PAGE_BUFFERS.clear();
}

/// A stored file unpacked as its name says: `.zst` (zstd), `.gz` (gzip) or anything else as it is.
pub fn unpack(name: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    unpack_into(name, bytes, &mut out)?;
    Ok(out)
}

/// As [`unpack`], into `out` (whatever it held is replaced; left empty on an error), keeping its
/// room: the transform unpacks page after page into one buffer. A fresh buffer of a page's size
/// (15 MB at 10,000 results) was mapped anew for each page and faulted in, a quarter of the
/// transform's page faults.
pub fn unpack_into(name: &str, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    let unpacked = if name.ends_with(".zst") {
        unzstd(bytes, ONE_BUFFER_LIMIT, out)
    } else if name.ends_with(".gz") {
        out.reserve(bytes.len() * 4);
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), out)
            .map(drop)
            .map_err(|e| format!("not gzip ({e})"))
    } else {
        out.extend_from_slice(bytes);
        Ok(())
    };
    if unpacked.is_err() {
        out.clear();
    }
    unpacked
}

/// A page packed as one frame that says its size (as collect packs them) is unpacked straight
/// into `out`, made room for once, not grown and copied as the stream goes; anything else
/// (several frames, no size said) as a stream. A frame whose content differs from the size it
/// claims does not unpack.
fn unzstd(bytes: &[u8], one_buffer_limit: u64, out: &mut Vec<u8>) -> Result<(), String> {
    let one_frame = zstd::zstd_safe::find_frame_compressed_size(bytes) == Ok(bytes.len());
    match zstd::zstd_safe::get_frame_content_size(bytes) {
        Ok(Some(size)) if one_frame && size <= one_buffer_limit => {
            out.reserve_exact(size as usize);
            // The decompressor writes into the Vec's room; the free function of that name
            // would write into its (empty) slice.
            zstd::bulk::Decompressor::new()
                .and_then(|mut unpacker| unpacker.decompress_to_buffer(bytes, out))
                .map(drop)
        }
        _ => zstd::stream::copy_decode(bytes, &mut *out),
    }
    .map_err(|e| format!("not zstd ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_unpack_as_their_names_say_and_a_wrong_packing_is_named() {
        let page = br#"{"results":[{"id":"a"}],"totalCount":1}"#.repeat(50);
        let packed = pack_page(&page);
        assert!(packed.len() < page.len() / 4, "{} bytes", packed.len());
        assert_eq!(unpack("0.json.zst", &packed).unwrap(), page);
        let gzipped = gzip(&[&page]);
        assert_eq!(unpack("0.json.gz", &gzipped).unwrap(), page);
        assert_eq!(unpack("0.json", &page).unwrap(), page);
        let error = unpack("0.json.zst", &gzipped).unwrap_err();
        assert!(error.starts_with("not zstd"), "{error}");
        let error = unpack("0.json.gz", &packed).unwrap_err();
        assert!(error.starts_with("not gzip"), "{error}");
        let error = unpack("0.json.zst", &packed[..packed.len() / 2]).unwrap_err();
        assert!(error.starts_with("not zstd"), "a cut-off page: {error}");
        // The checksum is the frame's last four bytes: a page changed at rest does not unpack.
        let mut damaged = packed.to_vec();
        let at = damaged.len() - 2;
        damaged[at] ^= 0x40;
        let error = unpack("0.json.zst", &damaged).unwrap_err();
        assert!(error.starts_with("not zstd"), "a damaged page: {error}");
    }

    #[test]
    fn a_packed_page_names_the_checksum_of_its_bytes() {
        let records: Vec<String> = (0..500)
            .map(|i| format!(r#"{{"id":"{i}","similarityId":"{}"}}"#, i * 7919 % 1013))
            .collect();
        let page =
            format!(r#"{{"results":[{}],"totalCount":500}}"#, records.join(",")).into_bytes();
        let packed = pack_page(&page);
        let checksum = page_checksum(&packed).expect("pack_page writes a checksum");
        assert_eq!(page_checksum(&pack_page(&page)), Some(checksum), "stable");
        let mut other = page.clone();
        other[9] = b'b';
        assert_ne!(page_checksum(&pack_page(&other)), Some(checksum));
        // The same bytes packed otherwise carry the same checksum: it is the content's.
        let mut level_19 = zstd::bulk::Compressor::new(19).unwrap();
        level_19.include_checksum(true).unwrap();
        let repacked = level_19.compress(&page).unwrap();
        assert_ne!(repacked, packed.to_vec());
        assert_eq!(page_checksum(&repacked), Some(checksum));
        // No checksum to name: a frame without one, two frames, gzip, a cut-off frame, nothing.
        let unchecked = zstd::bulk::compress(&page, 1).unwrap();
        assert_eq!(page_checksum(&unchecked), None);
        assert_eq!(page_checksum(&[&packed[..], &packed[..]].concat()), None);
        assert_eq!(page_checksum(&gzip(&[&page])), None);
        assert_eq!(page_checksum(&packed[..packed.len() - 1]), None);
        assert_eq!(page_checksum(b""), None);
    }

    #[test]
    fn a_page_unpacks_whether_or_not_its_frame_says_its_size_and_a_false_size_fails() {
        let page = br#"{"results":[{"id":"a"}],"totalCount":1}"#.repeat(50);
        let packed = pack_page(&page);
        let said = zstd::zstd_safe::get_frame_content_size(&packed).unwrap();
        assert_eq!(
            said,
            Some(page.len() as u64),
            "collect's frames say their size"
        );
        let unzstd = |packed: &[u8], limit: u64| {
            let mut out = Vec::new();
            unzstd(packed, limit, &mut out).map(|()| out)
        };
        assert_eq!(unzstd(&packed, 1 << 20).unwrap(), page, "in one buffer");
        assert_eq!(
            unzstd(&packed, 100).unwrap(),
            page,
            "over the limit: streamed"
        );
        let unsized_frame = zstd::stream::encode_all(&page[..], 1).unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&unsized_frame).unwrap(),
            None
        );
        assert_eq!(unpack("0.json.zst", &unsized_frame).unwrap(), page);
        // Two frames one after the other (`cat a.zst b.zst`): the first says only its own size.
        let two_frames = [&packed[..], &packed[..]].concat();
        assert_eq!(
            unpack("0.json.zst", &two_frames).unwrap(),
            [&page[..], &page[..]].concat()
        );
        // The size is the header's last field (after the magic number and one descriptor byte,
        // for a page this small): a frame saying it holds less, or more, does not unpack.
        for change in [-1i16, 1] {
            let mut lying = packed.to_vec();
            lying[5] = (i16::from(lying[5]) + change) as u8;
            let said = zstd::zstd_safe::get_frame_content_size(&lying)
                .unwrap()
                .unwrap();
            assert_ne!(said, page.len() as u64);
            let error = unpack("0.json.zst", &lying).unwrap_err();
            assert!(error.starts_with("not zstd"), "{change}: {error}");
            // Nor into a buffer with room to spare, kept from a larger page.
            let mut roomy = Vec::with_capacity(page.len() * 2);
            let error = unpack_into("0.json.zst", &lying, &mut roomy).unwrap_err();
            assert!(error.starts_with("not zstd"), "{change}, roomy: {error}");
        }
    }

    #[test]
    fn pages_unpacked_one_after_another_into_one_buffer_keep_its_room_and_none_of_the_last() {
        let large = br#"{"results":[{"id":"large"}],"totalCount":1}"#.repeat(400);
        let small = br#"{"results":[{"id":"b"}],"totalCount":1}"#.repeat(3);
        let mut buffer = Vec::new();
        unpack_into("0.json.zst", &pack_page(&large), &mut buffer).unwrap();
        assert_eq!(buffer, large);
        let (room, at) = (buffer.capacity(), buffer.as_ptr());
        for (name, packed) in [
            ("1.json.zst", pack_page(&small)),
            (
                "1.json.zst",
                Bytes::from(zstd::stream::encode_all(&small[..], 1).unwrap()),
            ),
            ("1.json.gz", gzip(&[&small])),
            ("1.json", Bytes::from(small.clone())),
        ] {
            unpack_into(name, &packed, &mut buffer).unwrap();
            assert_eq!(buffer, small, "{name}: the small page alone");
            assert_eq!(
                (buffer.capacity(), buffer.as_ptr()),
                (room, at),
                "{name}: the same buffer"
            );
        }
        let error = unpack_into("2.json.zst", b"not a frame", &mut buffer).unwrap_err();
        assert!(error.starts_with("not zstd"), "{error}");
        assert!(buffer.is_empty(), "nothing of a page that failed");
        let cut = gzip(&[&large]);
        let error = unpack_into("3.json.gz", &cut[..cut.len() - 9], &mut buffer).unwrap_err();
        assert!(error.starts_with("not gzip"), "{error}");
        assert!(buffer.is_empty(), "nothing of a gzip'd page cut short");
    }
}
