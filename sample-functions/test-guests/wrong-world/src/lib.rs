//! Test-only: a valid component that implements some other world
//! (`test:wrong/wrong`, exporting `run: func()`), built with wit-bindgen
//! directly instead of the Sluice SDK. The engine must refuse to deploy it
//! with an error naming the exports it expected.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package test:wrong;
            world wrong {
                export run: func();
            }
        ",
        world: "wrong",
    });

    struct Component;

    impl Guest for Component {
        fn run() {}
    }

    export!(Component);
}
