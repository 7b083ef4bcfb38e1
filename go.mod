module github.com/cmkrotator/cmkrotator

go 1.26.8
