module github.com/paddock-sandbox/paddock/clients/go

go 1.19
