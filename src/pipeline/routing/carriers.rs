//! Tracking-number formats of the carriers customers write about, with their check digits.
//!
//! Sources (formats and check-digit algorithms were read there, the code is ours):
//! - Mainland carriers' current formats: the `courier-validation` package
//!   (github.com/BF-zh/Courier-Validation, `src/pattern/*.ts`, 2024): SF `SF` + 13, JD `JD` +
//!   2 + 11, J&T `JT` + 13, YTO `YT` + 13, Deppon `DPK` + 12, ZTO 14 digits `7[3-68]…`, STO
//!   `77…` 14-17 digits, Yunda 15 digits `[34]…` or 13 digits `5…`, Cainiao `621` + 12.
//! - EMS and China Post domestic 13-digit prefixes, and SF's older 12-digit numbers: Taobao
//!   open platform `taobao.logistics.companies.get`, field `reg_mail_no` (as captured in
//!   public repositories).
//! - UPS, FedEx, DHL, USPS and the UPU S10 format with their check digits: the
//!   `tracking_number_data` repository (github.com/jkeen/tracking_number_data,
//!   `couriers/*.json` and `CHECKSUM_ALGORITHMS.md`).
//! - Cainiao `LP` + 14 digits: as printed on AliExpress/Cainiao labels; no published
//!   specification was found.
//!
//! Numbers made of digits only are ambiguous between carriers and with other numbers, so
//! the forms that are easiest to confuse (FedEx 12 and 15 digits, DHL Express 10 digits,
//! USPS 20 digits, SF's older 12 digits) count only when the text names the carrier, and a
//! carrier named in the text wins over the table order when several formats fit.

use regex::RegexSet;

/// A carrier: its id in entities and the words that name it (normalized, lowercase,
/// Simplified).
#[derive(Debug, Clone, Copy)]
pub struct Carrier {
    /// Id written in the entity's `carrier`.
    pub id: &'static str,
    /// Names customers use.
    pub names: &'static [&'static str],
}

/// Every carrier known; `Owner::Carrier(n)` in the lexicon indexes this table.
pub const CARRIERS: &[Carrier] = &[
    Carrier {
        id: "sf_express",
        names: &["顺丰", "sf express", "sf-express", "sfexpress", "sf"],
    },
    Carrier {
        id: "jd_logistics",
        names: &["京东", "jd logistics", "jdl"],
    },
    Carrier {
        id: "zto",
        names: &["中通", "zto"],
    },
    Carrier {
        id: "yto",
        names: &["圆通", "yto"],
    },
    Carrier {
        id: "sto",
        names: &["申通", "sto"],
    },
    Carrier {
        id: "yunda",
        names: &["韵达", "yunda"],
    },
    Carrier {
        id: "jt_express",
        names: &["极兔", "j&t", "jt express", "jtexpress"],
    },
    Carrier {
        id: "ems",
        names: &["ems", "e邮宝"],
    },
    Carrier {
        id: "china_post",
        names: &["中国邮政", "邮政", "china post", "chinapost"],
    },
    Carrier {
        id: "deppon",
        names: &["德邦", "deppon"],
    },
    Carrier {
        id: "cainiao",
        names: &["菜鸟", "cainiao"],
    },
    Carrier {
        id: "ups",
        names: &["ups"],
    },
    Carrier {
        id: "fedex",
        names: &["fedex", "fed ex", "联邦快递", "联邦"],
    },
    Carrier {
        id: "dhl",
        names: &["dhl"],
    },
    Carrier {
        id: "usps",
        names: &["usps"],
    },
];

/// Index of a carrier id in [`CARRIERS`].
pub fn carrier_index(id: &str) -> Option<usize> {
    CARRIERS.iter().position(|c| c.id == id)
}

/// How a format's last character is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    /// UPS: mod 10 over the 15 characters after `1Z`, letters as `(ascii - 3) % 10`, every
    /// second one doubled.
    Ups,
    /// FedEx Express 12: weights 3,1,7 over 11 digits, sum mod 11 mod 10.
    FedEx12,
    /// Mod 10 over every digit but the last; digits at even (odd) 0-based positions times
    /// `evens` (`odds`).
    Mod10 {
        evens: u32,
        odds: u32,
    },
    /// Mod 10 over the last `n` digits only (FedEx Ground 96: the serial part).
    Mod10Tail {
        n: usize,
        evens: u32,
        odds: u32,
    },
    /// USPS IMpb: a `420` + ZIP routing prefix is skipped, then mod 10 with even positions
    /// tripled.
    Usps,
    /// DHL Express: all but the last digit, as a number, mod 7.
    Mod7,
    /// UPU S10: weights 8,6,4,2,3,5,9,7 mod 11.
    S10,
}

/// Which carrier a format belongs to: fixed, or from an S10 number's country.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Carrier(&'static str),
    S10,
}

struct Spec {
    owner: Owner,
    pattern: &'static str,
    check: Check,
    /// Counts only when the text names the carrier.
    needs_name: bool,
}

const SPECS: &[Spec] = &[
    Spec {
        owner: Owner::Carrier("sf_express"),
        pattern: r"SF[0-9A-Z]\d{12}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("jd_logistics"),
        pattern: r"JD[0-9A-Z]{2}\d{11}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("jt_express"),
        pattern: r"JT\d{13}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("yto"),
        pattern: r"YT\d{13}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("deppon"),
        pattern: r"DPK\d{12}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("cainiao"),
        pattern: r"LP\d{14}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("ups"),
        pattern: r"1Z[0-9A-Z]{16}",
        check: Check::Ups,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("dhl"),
        pattern: r"(?:JJD|JVGL)\d{9,10}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("dhl"),
        pattern: r"GM\d{10,39}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::S10,
        pattern: r"[A-Z]{2}\d{9}[A-Z]{2}",
        check: Check::S10,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("usps"),
        pattern: r"(?:420\d{5})?9[1-5](?:\d{20}|\d{24})",
        check: Check::Usps,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("fedex"),
        pattern: r"96\d{20}",
        check: Check::Mod10Tail {
            n: 15,
            evens: 1,
            odds: 3,
        },
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("zto"),
        pattern: r"7[3-68]\d{12}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("sto"),
        pattern: r"77\d{12,15}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("yunda"),
        pattern: r"[34]\d{14}|5\d{12}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("cainiao"),
        pattern: r"621\d{12}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("ems"),
        pattern: r"1[01]\d{11}|9[57]\d{11}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("china_post"),
        pattern: r"9[689]\d{11}",
        check: Check::None,
        needs_name: false,
    },
    Spec {
        owner: Owner::Carrier("fedex"),
        pattern: r"\d{12}",
        check: Check::FedEx12,
        needs_name: true,
    },
    Spec {
        owner: Owner::Carrier("fedex"),
        pattern: r"\d{15}",
        check: Check::Mod10 { evens: 1, odds: 3 },
        needs_name: true,
    },
    Spec {
        owner: Owner::Carrier("dhl"),
        pattern: r"\d{10}",
        check: Check::Mod7,
        needs_name: true,
    },
    Spec {
        owner: Owner::Carrier("usps"),
        pattern: r"\d{20}",
        check: Check::Mod10 { evens: 3, odds: 1 },
        needs_name: true,
    },
    Spec {
        owner: Owner::Carrier("sf_express"),
        pattern: r"\d{12}",
        check: Check::None,
        needs_name: true,
    },
];

/// Recognises tracking numbers in single tokens: one regex set over every format, so a
/// word is looked at once however many formats there are.
pub struct Formats {
    specs: Vec<&'static Spec>,
    set: Option<RegexSet>,
}

impl std::fmt::Debug for Formats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Formats({})", self.specs.len())
    }
}

/// A recognised tracking number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    /// The number, uppercase.
    pub number: String,
    /// Carrier id.
    pub carrier: String,
    /// For S10 numbers: the issuing country.
    pub country: Option<String>,
}

impl Formats {
    /// The formats of the carriers in `enabled` (every carrier when `None`).
    pub fn new(enabled: Option<&[String]>) -> Self {
        let wanted = |id: &str| enabled.is_none_or(|list| list.iter().any(|c| c == id));
        let specs: Vec<&'static Spec> = SPECS
            .iter()
            .filter(|spec| match spec.owner {
                Owner::Carrier(id) => wanted(id),
                Owner::S10 => ["ems", "china_post", "usps", "postal"]
                    .iter()
                    .any(|id| wanted(id)),
            })
            .collect();
        // Built-in patterns; the unit tests show the set compiles.
        let set = RegexSet::new(specs.iter().map(|s| format!("^(?:{})$", s.pattern))).ok();
        Self { specs, set }
    }

    /// The tracking number `token` is, if any. `named(id)` tells whether the text names
    /// that carrier.
    pub fn recognise(
        &self,
        token: &str,
        named: impl Fn(&str) -> bool,
        enabled: impl Fn(&str) -> bool,
    ) -> Option<Tracking> {
        if !(10..=40).contains(&token.len()) || !token.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        let set = self.set.as_ref()?;
        let upper = token.to_ascii_uppercase();
        let mut first: Option<Tracking> = None;
        for index in set.matches(&upper).iter() {
            let spec = self.specs[index];
            if !valid(spec.check, &upper) {
                continue;
            }
            let (carrier, country) = match spec.owner {
                Owner::Carrier(id) => (id.to_owned(), None),
                Owner::S10 => {
                    let Some(carrier) = s10_carrier(&upper) else {
                        continue;
                    };
                    (carrier, Some(upper[11..13].to_owned()))
                }
            };
            if !enabled(&carrier) {
                continue;
            }
            let is_named = named(&carrier);
            if spec.needs_name && !is_named {
                continue;
            }
            let found = Tracking {
                number: upper.clone(),
                carrier,
                country,
            };
            if is_named {
                return Some(found);
            }
            first.get_or_insert(found);
        }
        first
    }
}

/// The carrier of an S10 number: China Post (EMS for `E?` services), USPS, or `postal`.
fn s10_carrier(number: &str) -> Option<String> {
    let country = number.get(11..13)?;
    Some(
        match country {
            "CN" if number.starts_with('E') => "ems",
            "CN" => "china_post",
            "US" => "usps",
            _ => "postal",
        }
        .to_owned(),
    )
}

fn digit(c: u8) -> Option<u32> {
    c.is_ascii_digit().then(|| u32::from(c - b'0'))
}

fn valid(check: Check, number: &str) -> bool {
    let bytes = number.as_bytes();
    match check {
        Check::None => true,
        Check::Ups => {
            let (Some(body), Some(&last)) = (bytes.get(2..17), bytes.get(17)) else {
                return false;
            };
            let mut sum = 0;
            for (i, &c) in body.iter().enumerate() {
                let value = match digit(c) {
                    Some(d) => d,
                    None => (u32::from(c) - 3) % 10,
                };
                sum += if i % 2 == 1 { value * 2 } else { value };
            }
            digit(last) == Some((10 - sum % 10) % 10)
        }
        Check::FedEx12 => {
            const WEIGHTS: [u32; 3] = [3, 1, 7];
            let Some((&last, body)) = bytes.split_last() else {
                return false;
            };
            let mut sum = 0;
            for (i, &c) in body.iter().enumerate() {
                let Some(d) = digit(c) else { return false };
                sum += d * WEIGHTS[i % 3];
            }
            digit(last) == Some(sum % 11 % 10)
        }
        Check::Mod10 { evens, odds } => mod10(bytes, evens, odds),
        Check::Usps => {
            let serial = match bytes.len() {
                30 | 34 if bytes.starts_with(b"420") => &bytes[8..],
                _ => bytes,
            };
            mod10(serial, 3, 1)
        }
        Check::Mod10Tail { n, evens, odds } => bytes
            .len()
            .checked_sub(n)
            .is_some_and(|from| mod10(&bytes[from..], evens, odds)),
        Check::Mod7 => {
            let Some((&last, body)) = bytes.split_last() else {
                return false;
            };
            let mut rest = 0u64;
            for &c in body {
                let Some(d) = digit(c) else { return false };
                rest = (rest * 10 + u64::from(d)) % 7;
            }
            digit(last).map(u64::from) == Some(rest)
        }
        Check::S10 => {
            const WEIGHTS: [u32; 8] = [8, 6, 4, 2, 3, 5, 9, 7];
            let (Some(serial), Some(&check)) = (bytes.get(2..10), bytes.get(10)) else {
                return false;
            };
            let mut sum = 0;
            for (&c, w) in serial.iter().zip(WEIGHTS) {
                let Some(d) = digit(c) else { return false };
                sum += d * w;
            }
            let expected = match sum % 11 {
                0 => 5,
                1 => 0,
                r => 11 - r,
            };
            digit(check) == Some(expected)
        }
    }
}

fn mod10(bytes: &[u8], evens: u32, odds: u32) -> bool {
    let Some((&last, body)) = bytes.split_last() else {
        return false;
    };
    let mut sum = 0;
    for (i, &c) in body.iter().enumerate() {
        let Some(d) = digit(c) else { return false };
        sum += d * if i % 2 == 0 { evens } else { odds };
    }
    digit(last) == Some((10 - sum % 10) % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_pattern_compiles() {
        let formats = Formats::new(None);
        assert_eq!(formats.specs.len(), SPECS.len());
        assert!(formats.set.is_some());
    }

    #[test]
    fn check_digits_follow_the_published_algorithms() {
        // Valid and invalid samples from jkeen/tracking_number_data.
        assert!(valid(Check::Ups, "1Z5R89390357567127"));
        assert!(!valid(Check::Ups, "1Z5R89390357567128"));
        assert!(valid(Check::FedEx12, "986578788855"));
        assert!(!valid(Check::FedEx12, "996578788855"));
        assert!(valid(Check::Mod10 { evens: 1, odds: 3 }, "568283610012000"));
        assert!(!valid(
            Check::Mod10 { evens: 1, odds: 3 },
            "568283610012732"
        ));
        assert!(valid(Check::Mod7, "3318810025"));
        assert!(!valid(Check::Mod7, "3318810010"));
        assert!(valid(Check::S10, "RB123456785GB"));
        assert!(!valid(Check::S10, "RB123456786US"));
        let usps = Check::Mod10 { evens: 3, odds: 1 };
        assert!(valid(usps, "71123456789123456787"));
        assert!(valid(Check::Usps, "9400111201080805483016"));
        assert!(valid(Check::Usps, "420221539101026837331000039521"));
        assert!(!valid(Check::Usps, "9200000000000000000000"));
        let ground96 = Check::Mod10Tail {
            n: 15,
            evens: 1,
            odds: 3,
        };
        assert!(valid(ground96, "9611020987654312345672"));
        assert!(!valid(ground96, "9600000000000000000001"));
    }
}
