module qscale.local/oci-wrapper

go 1.22
