"""The CDK stacks of cloud-ia. Stacks only wire constructs together; the constructs live in
`stacks/components/`, the typed configuration in `stacks/config.py`."""
