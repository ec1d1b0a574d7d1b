//! Tensor maps: the descriptors of a 2-D bf16 tensor in device memory that Hopper's bulk tensor
//! copies (TMA, `cp.async.bulk.tensor`) read boxes of. A kernel receives one as a
//! `const __grid_constant__ TensorMap` parameter (`kernels/hopper.cuh`); the host encodes it,
//! through the driver's `cuTensorMapEncodeTiled` on a GPU (`CudaRuntime`) or in the emulation's
//! own layout ([`TensorMapSpec::emulation_encoding`], read by `kernels/emu/runtime.cpp`).

use crate::error::{Error, Result};

/// The encoded descriptor: 128 opaque bytes, 64-byte aligned, as `CUtensorMap`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
pub struct TensorMap(pub [u64; 16]);

/// How a bulk copy lays a box's rows out in shared memory: the 16-byte chunks of each row XORed
/// with the row's position in an 8-row pattern (CUtensorMapSwizzle's numbering). The span is
/// the row length in bytes the pattern covers; a box row may not be longer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swizzle {
    None = 0,
    B32 = 1,
    B64 = 2,
    B128 = 3,
}

impl Swizzle {
    /// The span in bytes (None: unlimited).
    pub fn span(self) -> Option<u32> {
        match self {
            Swizzle::None => None,
            Swizzle::B32 => Some(32),
            Swizzle::B64 => Some(64),
            Swizzle::B128 => Some(128),
        }
    }
}

/// A row-major bf16 matrix of `rows` × `cols` at `address` (rows `row_bytes` apart), copied in
/// boxes of `box_rows` × `box_cols` elements with `swizzle`. Out-of-bounds elements of a box
/// read as zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMapSpec {
    pub address: u64,
    pub rows: u64,
    pub cols: u64,
    pub row_bytes: u64,
    pub box_rows: u32,
    pub box_cols: u32,
    pub swizzle: Swizzle,
}

/// bf16 elements.
const ELEMENT_BYTES: u64 = 2;
/// "TMAP", the emulation's mark of an encoded map.
const EMULATION_MAGIC: u32 = 0x5041_4d54;

impl TensorMapSpec {
    /// A dense row-major matrix (rows `cols` elements apart) in boxes of `box_rows` ×
    /// `box_cols`.
    pub fn row_major(
        address: u64,
        rows: usize,
        cols: usize,
        (box_rows, box_cols): (u32, u32),
        swizzle: Swizzle,
    ) -> TensorMapSpec {
        TensorMapSpec {
            address,
            rows: rows as u64,
            cols: cols as u64,
            row_bytes: cols as u64 * ELEMENT_BYTES,
            box_rows,
            box_cols,
            swizzle,
        }
    }

    /// Checks the rules `cuTensorMapEncodeTiled` enforces, so that the emulation refuses what a
    /// GPU would.
    pub fn validate(&self) -> Result<()> {
        let fail = |why: String| Err(Error::Device(format!("tensor map {self:?}: {why}")));
        if !self.address.is_multiple_of(16) {
            return fail("the address must be 16-byte aligned".into());
        }
        if !self.row_bytes.is_multiple_of(16) || self.row_bytes >= 1 << 40 {
            return fail("the row stride must be a multiple of 16 bytes below 2^40".into());
        }
        if self.rows == 0 || self.cols == 0 || self.rows > 1 << 32 || self.cols > 1 << 32 {
            return fail("each dimension must be 1 ..= 2^32".into());
        }
        if self.row_bytes < self.cols * ELEMENT_BYTES {
            return fail("rows overlap (row stride below a row's bytes)".into());
        }
        if !(1..=256).contains(&self.box_rows) || !(1..=256).contains(&self.box_cols) {
            return fail("box dimensions must be 1 ..= 256".into());
        }
        let inner = u64::from(self.box_cols) * ELEMENT_BYTES;
        if !inner.is_multiple_of(16) {
            return fail("a box row must be a multiple of 16 bytes".into());
        }
        if let Some(span) = self.swizzle.span() {
            if inner > u64::from(span) {
                return fail(format!(
                    "a box row of {inner} bytes exceeds the {span}-byte swizzle"
                ));
            }
        }
        Ok(())
    }

    /// The emulation's encoding (`EmuTensorMap` in kernels/emu/runtime.cpp): magic, rank,
    /// address, dims[5], strides[4], box[5] (u32), element bytes, swizzle.
    pub fn emulation_encoding(&self) -> TensorMap {
        let mut bytes = [0u8; 128];
        let mut at = 0;
        let mut put = |b: &[u8]| {
            bytes[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        put(&EMULATION_MAGIC.to_le_bytes());
        put(&2u32.to_le_bytes());
        put(&self.address.to_le_bytes());
        for dim in [self.cols, self.rows, 0, 0, 0] {
            put(&dim.to_le_bytes());
        }
        for stride in [self.row_bytes, 0, 0, 0] {
            put(&stride.to_le_bytes());
        }
        for b in [self.box_cols, self.box_rows, 0, 0, 0] {
            put(&b.to_le_bytes());
        }
        put(&(ELEMENT_BYTES as u32).to_le_bytes());
        put(&(self.swizzle as u32).to_le_bytes());
        let mut words = [0u64; 16];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        }
        TensorMap(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TensorMapSpec {
        TensorMapSpec {
            address: 0x1000,
            rows: 200,
            cols: 72,
            row_bytes: 144,
            box_rows: 128,
            box_cols: 64,
            swizzle: Swizzle::B128,
        }
    }

    #[test]
    fn the_rules_of_cu_tensor_map_encode_tiled_are_checked() {
        assert!(spec().validate().is_ok());
        let bad = [
            TensorMapSpec {
                address: 0x1008,
                ..spec()
            },
            TensorMapSpec {
                row_bytes: 146,
                ..spec()
            },
            TensorMapSpec {
                box_cols: 72,
                ..spec()
            },
            TensorMapSpec {
                box_cols: 4,
                ..spec()
            },
            TensorMapSpec {
                box_rows: 257,
                ..spec()
            },
            TensorMapSpec {
                row_bytes: 128,
                ..spec()
            },
            TensorMapSpec {
                box_cols: 64,
                swizzle: Swizzle::B64,
                ..spec()
            },
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?} was accepted");
        }
    }

    #[test]
    fn the_emulation_encoding_has_the_fields_in_order() {
        let m = spec().emulation_encoding();
        assert_eq!(m.0[0], u64::from(EMULATION_MAGIC) | (2 << 32));
        assert_eq!(m.0[1], 0x1000);
        assert_eq!((m.0[2], m.0[3]), (72, 200));
        assert_eq!(m.0[7], 144);
        assert_eq!(m.0[11], 64 | (128 << 32));
        assert_eq!(m.0[13], 2 << 32); // box[4] = 0, element bytes
        assert_eq!(m.0[14], 3); // swizzle
    }
}
