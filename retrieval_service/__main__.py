from retrieval_service.server import main

main()
