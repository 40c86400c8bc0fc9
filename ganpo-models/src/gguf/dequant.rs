//! Dequantization of ggml tensor types to f32, following ggml's reference `dequantize_row_*`.

use burn::tensor::{bf16, f16};

/// A ggml type ganpo reads: its id, block size (values) and block bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
    /// 32 values: f16 scale, 32 x i8.
    Q8_0,
    /// 32 values: f16 scale, 32 x 4-bit (offset 8).
    Q4_0,
    /// 32 values: f16 scale and minimum, 32 x 4-bit.
    Q4_1,
    /// 32 values: f16 scale, 32 x 5-bit (offset 16), the fifth bits packed in a u32.
    Q5_0,
    /// 32 values: f16 scale and minimum, 32 x 5-bit, the fifth bits packed in a u32.
    Q5_1,
    /// 256-value super-blocks, 4-bit with 6-bit scales and minimums.
    Q4K,
    /// 256-value super-blocks, 5-bit with 6-bit scales and minimums.
    Q5K,
    /// 256-value super-blocks, 6-bit with 8-bit scales.
    Q6K,
}

/// Names of the supported types, for error messages.
pub const SUPPORTED_TYPES: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K";

impl GgmlType {
    /// The type with ggml id `id`, if supported.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::Bf16,
            _ => return None,
        })
    }

    /// ggml's name of a type id (for errors about unsupported ones).
    pub fn name_of(id: u32) -> String {
        let names = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
            "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
            "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
            "BF16",
        ];
        names
            .get(id as usize)
            .map_or_else(|| format!("type {id}"), |n| n.to_string())
    }

    /// `(values per block, bytes per block)`.
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q8_0 => (32, 34),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
        }
    }

    /// Bytes of `n` values, if `n` is a whole number of blocks.
    pub fn byte_len(self, n: usize) -> Option<usize> {
        let (values, bytes) = self.block();
        n.is_multiple_of(values).then(|| n / values * bytes)
    }
}

fn half(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// 6-bit scale and minimum `j` of a Q4_K / Q5_K super-block (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        let d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (d as f32, m as f32)
    }
}

/// The 32 unsigned 5-bit values of a Q5_0 / Q5_1 block from its `qh` (u32, the fifth bits) and
/// `qs` (16 bytes of low nibbles): values `0..16` from the low nibbles, `16..32` from the high.
fn five_bit(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    let qh = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let qs = &b[4..20];
    let low = (0..16).map(move |j| (qs[j] & 0xF) as u32 | ((qh >> j) << 4) & 0x10);
    let high = (0..16).map(move |j| (qs[j] >> 4) as u32 | (qh >> (j + 12)) & 0x10);
    low.chain(high).map(|q| q as f32)
}

/// Dequantizes `data` (a whole number of blocks of `ty`) into f32 values.
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    let (values, bytes) = ty.block();
    let mut out = Vec::with_capacity(data.len() / bytes * values);
    for b in data.chunks_exact(bytes) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(half(b)),
            GgmlType::Bf16 => out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = half(b);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
            GgmlType::Q4_0 => {
                let d = half(b);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| ((q & 0xF) as f32 - 8.0) * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as f32 - 8.0) * d));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (half(b), half(&b[2..]));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| (q & 0xF) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
            GgmlType::Q5_0 => {
                let d = half(b);
                out.extend(five_bit(&b[2..22]).map(|q| (q - 16.0) * d));
            }
            GgmlType::Q5_1 => {
                let (d, m) = (half(b), half(&b[2..]));
                out.extend(five_bit(&b[4..24]).map(|q| q * d + m));
            }
            GgmlType::Q4K => {
                let (d, min) = (half(b), half(&b[2..]));
                let scales = &b[4..16];
                for (i, q) in b[16..144].chunks_exact(32).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * i, scales);
                    let (sc2, m2) = scale_min_k4(2 * i + 1, scales);
                    out.extend(q.iter().map(|&v| d * sc1 * (v & 0xF) as f32 - min * m1));
                    out.extend(q.iter().map(|&v| d * sc2 * (v >> 4) as f32 - min * m2));
                }
            }
            GgmlType::Q5K => {
                let (d, min) = (half(b), half(&b[2..]));
                let scales = &b[4..16];
                let qh = &b[16..48];
                for (i, ql) in b[48..176].chunks_exact(32).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * i, scales);
                    let (sc2, m2) = scale_min_k4(2 * i + 1, scales);
                    let (u1, u2) = (1u8 << (2 * i), 2u8 << (2 * i));
                    let high = |h: u8, u: u8| if h & u != 0 { 16.0 } else { 0.0 };
                    out.extend(
                        ql.iter()
                            .zip(qh)
                            .map(|(&l, &h)| d * sc1 * ((l & 0xF) as f32 + high(h, u1)) - min * m1),
                    );
                    out.extend(
                        ql.iter()
                            .zip(qh)
                            .map(|(&l, &h)| d * sc2 * ((l >> 4) as f32 + high(h, u2)) - min * m2),
                    );
                }
            }
            GgmlType::Q6K => {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = half(&b[208..]);
                for n in 0..2 {
                    let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
                    let mut y = [0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q = |low: u8, shift: u32| {
                            ((low | (((qh[l] >> shift) & 3) << 4)) as i32 - 32) as f32
                        };
                        let s = |k: usize| sc[is + k] as i8 as f32;
                        y[l] = d * s(0) * q(ql[l] & 0xF, 0);
                        y[l + 32] = d * s(2) * q(ql[l + 32] & 0xF, 2);
                        y[l + 64] = d * s(4) * q(ql[l] >> 4, 4);
                        y[l + 96] = d * s(6) * q(ql[l + 32] >> 4, 6);
                    }
                    out.extend_from_slice(&y);
                }
            }
        }
    }
    out
}
