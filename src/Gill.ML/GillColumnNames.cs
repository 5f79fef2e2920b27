namespace Gill.ML;

/// <summary>
/// Default column names used by Gill.ML stages. <see cref="Label"/>, <see cref="Score"/>, <see cref="PredictedLabel"/>,
/// <see cref="Probability"/> and <see cref="Features"/> are the strings ML.NET itself uses, so Gill outputs plug into ML.NET
/// trainers and evaluators without renaming. Vector columns end in what the tensor is (…Features, …Embedding, …Tokens,
/// …HiddenStates).
/// </summary>
public static class GillColumnNames
{
    /// <summary>An image (<c>Microsoft.ML.Data.MLImage</c>).</summary>
    public const string Image = "Image";

    /// <summary>Path of an image file (text).</summary>
    public const string ImagePath = "ImagePath";

    /// <summary>A caption or prompt (text).</summary>
    public const string Caption = "Caption";

    /// <summary>CLIP vision pooled output (no projection), the features GILL's mappers consume: [1024] for ViT-L/14.</summary>
    public const string ClipPooledFeatures = "ClipPooledFeatures";

    /// <summary>CLIP projected image embedding (the CLIP-similarity evaluation space): [768] for ViT-L/14.</summary>
    public const string ClipImageEmbedding = "ClipImageEmbedding";

    /// <summary>Visual tokens in the LM embedding space: [n_visual_tokens, d_model].</summary>
    public const string VisualTokens = "VisualTokens";

    /// <summary>LM hidden states at the [IMG] token positions: [num_tokens, d_model].</summary>
    public const string ImgHiddenStates = "ImgHiddenStates";

    /// <summary>GILLMapper output in the text-to-image text-encoder space: [77, 768].</summary>
    public const string GenerationEmbedding = "GenerationEmbedding";

    /// <summary>Target of the generation mapping: the text-to-image text encoder's hidden states [L, m] (e.g. [77, 768]).</summary>
    public const string GenerationTarget = "GenerationTarget";

    /// <summary>Alias of <see cref="GenerationTarget"/> under the name used in the design notes.</summary>
    public const string SdTextEmbedding = GenerationTarget;

    /// <summary>Text-side retrieval embedding: [ret_emb_dim].</summary>
    public const string TextRetrievalEmbedding = "TextRetrievalEmbedding";

    /// <summary>Image-side retrieval embedding: [ret_emb_dim].</summary>
    public const string ImageRetrievalEmbedding = "ImageRetrievalEmbedding";

    /// <summary>Generate-or-retrieve decision.</summary>
    public const string Decision = "Decision";

    /// <summary>ML.NET's score column.</summary>
    public const string Score = "Score";

    /// <summary>ML.NET's probability column.</summary>
    public const string Probability = "Probability";

    /// <summary>ML.NET's label column.</summary>
    public const string Label = "Label";

    /// <summary>ML.NET's predicted label column.</summary>
    public const string PredictedLabel = "PredictedLabel";

    /// <summary>ML.NET's features column.</summary>
    public const string Features = "Features";
}
