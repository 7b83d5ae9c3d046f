"""Protection thresholds shared by the sympy and torch forms of the operators.

Chosen so that every primitive stays finite (value and gradient) in float32
for inputs up to 1e4 in magnitude.
"""
LOG_EPS = 1e-12     # log(|x|) is taken of max(|x|, LOG_EPS): log(LOG_EPS) ~ -27.6
SQRT_EPS = 1e-12    # sqrt(|x|) of max(|x|, SQRT_EPS): gradient at most 5e5
DIV_EPS = 1e-6      # denominators smaller than this in magnitude become +-DIV_EPS
EXP_MAX = 30.0      # exp(min(x, EXP_MAX)): at most ~1.1e13
POW_EPS = 1e-12     # non-integer powers are taken of max(|x|, POW_EPS)
MAX_EXPONENT = 6    # |exponent| of pow; keeps 1e4**exponent finite in float32
