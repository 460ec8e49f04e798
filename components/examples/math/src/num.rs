//! A JSON number that stays an integer while results are exact.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Number;
use weft_sdk::StepError;

/// An integer when it fits `i64` exactly, otherwise a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn is_zero(self) -> bool {
        self.as_f64() == 0.0
    }

    pub fn add(self, other: Num) -> Result<Num, StepError> {
        int_or_float(self, other, i64::checked_add, |a, b| a + b)
    }

    pub fn sub(self, other: Num) -> Result<Num, StepError> {
        int_or_float(self, other, i64::checked_sub, |a, b| a - b)
    }

    pub fn mul(self, other: Num) -> Result<Num, StepError> {
        int_or_float(self, other, i64::checked_mul, |a, b| a * b)
    }

    pub fn div(self, other: Num) -> Result<Num, StepError> {
        if other.is_zero() {
            return Err(StepError::new("division_by_zero", "division by zero"));
        }
        let exact = |a: i64, b: i64| a.checked_rem(b).filter(|r| *r == 0).and(a.checked_div(b));
        int_or_float(self, other, exact, |a, b| a / b)
    }

    pub fn rem(self, other: Num) -> Result<Num, StepError> {
        if other.is_zero() {
            return Err(StepError::new(
                "division_by_zero",
                "remainder of division by zero",
            ));
        }
        int_or_float(self, other, i64::checked_rem, |a, b| a % b)
    }

    pub fn pow(self, other: Num) -> Result<Num, StepError> {
        let int = |a: i64, b: i64| a.checked_pow(u32::try_from(b).ok()?);
        int_or_float(self, other, int, f64::powf)
    }
}

/// `int` on two integers when it gives a result, else `float`, which must
/// be a finite number.
fn int_or_float(
    a: Num,
    b: Num,
    int: impl Fn(i64, i64) -> Option<i64>,
    float: impl Fn(f64, f64) -> f64,
) -> Result<Num, StepError> {
    if let (Num::Int(x), Num::Int(y)) = (a, b)
        && let Some(result) = int(x, y)
    {
        return Ok(Num::Int(result));
    }
    let result = float(a.as_f64(), b.as_f64());
    if result.is_nan() {
        Err(StepError::new("undefined", "the result is not a number"))
    } else if result.is_infinite() {
        Err(StepError::new(
            "overflow",
            "the result is too large for a number",
        ))
    } else {
        Ok(Num::Float(result))
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = Number::deserialize(deserializer)?;
        Ok(match number.as_i64() {
            Some(i) => Num::Int(i),
            // Without arbitrary precision every JSON number has an f64 form.
            None => Num::Float(number.as_f64().unwrap_or(f64::NAN)),
        })
    }
}

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Num::Int(i) => serializer.serialize_i64(i),
            Num::Float(f) => serializer.serialize_f64(f),
        }
    }
}
