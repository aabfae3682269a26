module qscale.local/privileged-probe

go 1.22
