"""Study folder layout, session plans, catch/practice selection and the bundle writer."""
