"""Authorization: CEL expressions and the decision engine."""
