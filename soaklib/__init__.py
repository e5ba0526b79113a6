"""soaklib"""
